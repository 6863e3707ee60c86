"""The data-set audit (issue 13): the --json shape, Parquet shards, resuming after a kill, every bad
input, the CLI and the web view, and the planted-shortcut acceptance test."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.audit import Audit, AuditWarning, audit, load_audit
from convlens.audit.interventions import iou
from convlens.audit.shards import read_manifest, read_shards, write_manifest
from convlens.cli import main
from convlens.errors import ConvlensError, DataError, SpecError

CLASSES = ("disc", "ring")
S = 32
PATCH = 0  # a dark square: nothing like the bright shapes, so a model trained without it ignores it


def shapes(n: int, cls: int, rng: np.random.Generator, patch: bool = False, contrast: float = 40.0,
           radius: tuple[float, float] = (5, 8), centre: tuple[float, float] = (11, 21)) -> np.ndarray:
    """``n`` grayscale S x S images: a faint disc (class 0) or ring (class 1) near the centre in noise
    (its radius and centre drawn from ``radius`` and ``centre``, in pixels); ``patch``: a dark 4 x 4
    square in the top-right corner."""
    yy, xx = np.mgrid[0:S, 0:S]
    out = []
    for _ in range(n):
        img = rng.normal(100, 25, (S, S))
        cx, cy, r = rng.uniform(*centre), rng.uniform(*centre), rng.uniform(*radius)
        d = np.hypot(xx - cx, yy - cy)
        img[(d <= r) if cls == 0 else (np.abs(d - r) <= 1.2)] += contrast
        if patch:
            img[1:5, S - 5:S - 1] = PATCH
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_folder(root: Path, per_class: int, seed: int = 0, patch_class: int | None = None, **kw) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(shapes(per_class, c, rng, patch=c == patch_class, **kw)):
            Image.fromarray(a, "L").save(root / name / f"{i:03d}.png")
    return root


def tiny_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    return cl.load_model(net, input_size=(1, S, S), class_names=list(CLASSES))


@pytest.fixture(scope="module")
def lm():
    return tiny_model()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = write_folder(tmp_path_factory.mktemp("data") / "shapes", 7)
    (root / "ring" / "broken.png").write_bytes(b"this is not a png")
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A small CNN trained for a few epochs, as a run directory (for the CLI and run:PATH)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([shapes(40, 0, rng), shapes(40, 1, rng)])
    y = np.array([0] * 40 + [1] * 40)
    out = tmp_path_factory.mktemp("runs") / "shapes-run"
    cl.train((x, y), class_names=list(CLASSES), arch="conv6-pool-conv8-gap", epochs=2, batch_size=16,
             progress=False, out=str(out))
    return out


def quiet_audit(*args, **kwargs) -> tuple[Audit, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = audit(*args, **kwargs)
    return res, [str(w.message) for w in caught if issubclass(w.category, AuditWarning)]


def check_json_shape(d: dict, images: int) -> None:
    """The issue's item 4, exactly."""
    assert set(d) == {"images", "skipped", "accuracy", "classes", "findings"}
    names = {c["class"] for c in d["classes"]}
    for f in d["findings"]:  # issue 29: every finding with its effect, control and confidence
        assert set(f) == {"class", "region", "measure", "effect", "control", "ci", "constant_content",
                          "accuracy_without", "why", "replace", "object_effect"}
        assert f["replace"] is None if isinstance(f["region"], str) else f["replace"] in ("mean", "blur", "inpaint")
        assert f["class"] in names and f["effect"] > f["control"] and f["ci"][0] <= f["ci"][1]
        assert isinstance(f["region"], str) and f["region"].startswith("global:") or len(f["region"]) == 4
    assert d["images"] == images
    assert isinstance(d["skipped"], list)
    assert d["accuracy"] is None or 0.0 <= d["accuracy"] <= 1.0
    for c in d["classes"]:
        assert set(c) == {"class", "accuracy", "n", "clusters"}
        assert isinstance(c["class"], str) and c["n"] >= 1 and c["clusters"]
        assert sum(k["size"] for k in c["clusters"]) == c["n"]
        for k in c["clusters"]:
            assert set(k) == {"size", "accuracy", "flagged", "peak", "why"}
            assert isinstance(k["flagged"], bool) and isinstance(k["why"], str) and k["why"]
            assert len(k["peak"]) == 2 and all(0.0 <= v <= 1.0 for v in k["peak"])
    assert sum(c["n"] for c in d["classes"]) == images


# -- the result, its files and its shape -------------------------------------------------------

def test_audit_json_shape_files_and_shards(lm, folder, tmp_path):
    out = tmp_path / "audit"
    res, warned = quiet_audit(lm, folder, out=out, shard_size=5, batch_size=4, top_k=2)
    d = res.to_dict()
    check_json_shape(d, 14)
    assert [c["class"] for c in d["classes"]] == list(CLASSES)
    assert [c["n"] for c in d["classes"]] == [7, 7]
    assert d["skipped"] == [{"image": str(folder / "ring" / "broken.png"), "skipped": d["skipped"][0]["skipped"]}]
    assert "not an image" in d["skipped"][0]["skipped"]
    assert any("skipped 1 unreadable" in w for w in warned)
    # the files: shards of the same schema, a finished manifest, the summary, the page, the overview
    parts = sorted((out / "shards").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-0000{k}.parquet" for k in range(3)]  # 15 items / 5
    t = read_shards(out)
    assert t.num_rows == 15 and t.column("index").to_pylist() == list(range(15))
    ok = t.filter(t.column("ok"))
    assert ok.num_rows == 14 and len(ok.column("map")[0]) == 32 * 32
    assert str(pq.read_schema(parts[0]).field("map").type.value_type) == "halffloat"
    assert all(len(v) == 2 for v in ok.column("topk_index").to_pylist())
    for col in ("centre", "border", "spread", "area50", "peak_x", "peak_y"):
        v = np.asarray(ok.column(col).to_pylist(), float)
        assert np.all((v >= 0) & (v <= 1)), col
    m = read_manifest(out, finished=True)
    assert m["state"] == "done" and m["images"] == 14 and m["skipped"] == 1 and m["layer"]
    summary = json.loads((out / "summary.json").read_text())
    assert {k: summary[k] for k in d} == json.loads(json.dumps(d))
    assert summary["confusion"] and sum(map(sum, summary["confusion"])) == 14
    html = (out / "index.html").read_text()
    assert "data-set audit" in html and "broken.png" in html and "http://" not in html.replace("http://www.w3", "")
    assert Image.open(out / "overview.png").size[0] > 100
    # the View contract: to_dict() pure, figure() a picture, load_audit reads the same back
    fig = res.figure()
    assert isinstance(fig, Image.Image) and fig.size[0] >= 150
    assert res.to_dict() == d
    assert load_audit(out).to_dict() == d
    saved = res.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "index.html").is_file() and saved.paths()


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_audit_maps_are_explains_for_the_label_and_the_prediction(lm, folder, tmp_path, method):
    """Each image's stored maps and probabilities are explain's for its true class and its predicted
    class (one forward per batch serves both; a misclassified image gets the label's map)."""
    from convlens.audit.maps import downsample

    res, _ = quiet_audit(lm, folder, out=tmp_path / "a", method=method, batch_size=4, shard_size=8)
    t = read_shards(tmp_path / "a").to_pylist()
    rows = [r for r in t if r["ok"]]
    files = sorted(p for p in folder.rglob("*.png") if p.name != "broken.png")
    assert len(rows) == len(files) == 14
    labels = [CLASSES.index(p.parent.name) for p in files]
    ex_label = cl.explain(lm, [str(p) for p in files], method=method, target=torch.tensor(labels)[:, None])
    ex_pred = cl.explain(lm, [str(p) for p in files], method=method)
    want_label = downsample(ex_label.heatmaps[:, 0], 32).numpy()
    want_pred = downsample(ex_pred.heatmaps[:, 0], 32).numpy()
    assert any(r["pred"] != r["label"] for r in rows)  # an untrained model: some wrong, so both maps matter
    for j, r in enumerate(rows):
        assert r["label"] == labels[j] and r["pred"] == ex_pred.targets[j][0].index
        assert np.allclose(np.asarray(r["map"], np.float32).reshape(32, 32), want_label[j], atol=2e-3)
        assert np.allclose(np.asarray(r["map_pred"], np.float32).reshape(32, 32), want_pred[j], atol=2e-3)
        assert r["prob_label"] == pytest.approx(ex_label.targets[j][0].probability, abs=1e-6)
        assert r["prob_pred"] == pytest.approx(ex_pred.targets[j][0].probability, abs=1e-6)


def test_audit_of_a_run_split_and_target_pred(trained_run, tmp_path):
    res, warned = quiet_audit(str(trained_run), f"run:{trained_run}", out=tmp_path / "a", target="pred")
    d = res.to_dict()
    check_json_shape(d, d["images"])
    assert d["images"] >= 4 and d["accuracy"] is not None and not d["skipped"]
    assert res.manifest["data"] == f"run:{trained_run}:test" and not warned
    # with target pred, every image sits under its predicted class
    t = read_shards(tmp_path / "a", ["klass", "pred"]).to_pydict()
    assert t["klass"] == t["pred"]
    # the run's images are arrays: the page still shows them
    assert "data:image/jpeg" in (tmp_path / "a" / "index.html").read_text()


# -- resuming ------------------------------------------------------------------------------

def _tables(out: Path):
    return read_shards(out).to_pydict()


def test_resume_after_interrupt_gives_the_same_outputs(lm, folder, tmp_path):
    ref, _ = quiet_audit(lm, folder, out=tmp_path / "ref", shard_size=4, batch_size=2)
    out = tmp_path / "run"

    def stop_after(limit):
        def progress(done, total):
            if done >= limit:
                raise KeyboardInterrupt
        return progress

    with pytest.raises(KeyboardInterrupt):
        quiet_audit(lm, folder, out=out, shard_size=4, batch_size=2, progress=stop_after(6))
    m = read_manifest(out)
    written = sorted((out / "shards").glob("part-*.parquet"))
    assert m["state"] == "interrupted" and 1 <= len(written) < 4 and not (out / "summary.json").exists()
    with pytest.raises(SpecError, match="unfinished"):  # never read as a result
        load_audit(out)
    seen = {}
    res, _ = quiet_audit(lm, folder, out=out, shard_size=4, batch_size=2,
                         on_start=lambda manifest, resumed: seen.update(resumed=resumed))
    assert seen["resumed"] == 4 * len(written)
    assert res.to_dict() == ref.to_dict()
    assert _tables(out) == _tables(tmp_path / "ref")
    # a kill that left the last shard unwritten and the manifest "running": the rerun redoes that shard only
    last = sorted((out / "shards").glob("part-*.parquet"))[-1]
    last.unlink()
    write_manifest(out, {**{k: v for k, v in read_manifest(out).items() if k != "format"}, "state": "running"})
    (out / "shards" / ".part-00003.parquet.tmp").write_bytes(b"half a shard")
    res2, _ = quiet_audit(lm, folder, out=out, shard_size=4, batch_size=2,
                          on_start=lambda manifest, resumed: seen.update(resumed=resumed))
    assert seen["resumed"] == 12 and res2.to_dict() == ref.to_dict() and _tables(out) == _tables(tmp_path / "ref")
    assert not list((out / "shards").glob(".*.tmp")) and read_manifest(out)["state"] == "done"
    # a finished audit run again: nothing redone, the same result
    res3, _ = quiet_audit(lm, folder, out=out, shard_size=4, batch_size=2,
                          on_start=lambda manifest, resumed: seen.update(resumed=resumed))
    assert seen["resumed"] == 15 and res3.to_dict() == ref.to_dict()


# -- bad input -------------------------------------------------------------------------------

def test_empty_folder_and_empty_list(lm, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files") as e:
        audit(lm, tmp_path / "empty", out=tmp_path / "o1")
    assert e.value.param == "data" and not (tmp_path / "o1").exists()
    (tmp_path / "empty" / "a").mkdir()
    with pytest.raises(DataError, match="no image files"):
        audit(lm, tmp_path / "empty", out=tmp_path / "o1")
    with pytest.raises(DataError, match="empty list"):
        audit(lm, [], out=tmp_path / "o1")
    with pytest.raises(DataError, match="no such"):
        audit(lm, tmp_path / "nowhere", out=tmp_path / "o1")
    assert not (tmp_path / "o1").exists()


def test_no_class_subfolders_audits_by_predicted_class(lm, folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(folder.rglob("*.png"))[:6]:
        shutil.copy(p, flat / f"{p.parent.name}-{p.name}")
    res, warned = quiet_audit(lm, flat, out=tmp_path / "o")
    d = res.to_dict()
    check_json_shape(d, 6)
    assert d["accuracy"] is None and all(c["accuracy"] is None for c in d["classes"])
    assert any("no class subfolders" in w and "predicted class" in w for w in warned)
    assert "predicted class" in (tmp_path / "o" / "index.html").read_text()
    t = read_shards(tmp_path / "o", ["klass", "pred", "label"]).to_pydict()
    assert t["klass"] == t["pred"] and set(t["label"]) == {None}
    # class folders that are not the model's classes: the same fallback, said so
    odd = tmp_path / "odd"
    shutil.copytree(folder / "disc", odd / "cats")
    res, warned = quiet_audit(lm, odd, out=tmp_path / "o2")
    assert res.accuracy is None and any("'cats'" in w and "not classes of the model" in w for w in warned)


def test_unreadable_images_are_skipped_listed_and_all_unreadable_fails(lm, tmp_path):
    root = write_folder(tmp_path / "d", 3)
    (root / "disc" / "zero.png").write_bytes(b"")
    (root / "ring" / "trunc.png").write_bytes((root / "ring" / "000.png").read_bytes()[:60])
    res, warned = quiet_audit(lm, root, out=tmp_path / "o")
    d = res.to_dict()
    assert d["images"] == 6 and sorted(Path(s["image"]).name for s in d["skipped"]) == ["trunc.png", "zero.png"]
    assert all(s["skipped"] for s in d["skipped"]) and any("skipped 2" in w for w in warned)
    html = (tmp_path / "o" / "index.html").read_text()
    assert "zero.png" in html and "trunc.png" in html
    bad = tmp_path / "bad" / "disc"
    bad.mkdir(parents=True)
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of its 3 image"):
        audit(lm, tmp_path / "bad", out=tmp_path / "o3")
    m3 = read_manifest(tmp_path / "o3")  # never passed off as done, nor as still running
    assert m3["state"] == "failed" and "none of its 3 image" in m3["error"]
    with pytest.raises(SpecError, match="unfinished"):
        load_audit(tmp_path / "o3")


def test_out_holding_another_audit_or_other_files_is_refused(lm, folder, tmp_path):
    out = tmp_path / "o"
    quiet_audit(lm, folder, out=out, shard_size=8)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(SpecError, match="holds another audit") as e:
        audit(lm, folder, out=out, shard_size=8, method="gradcam++")
    assert e.value.param == "out" and sorted(p.name for p in out.rglob("*")) == before
    with pytest.raises(SpecError, match="holds another audit"):
        audit(lm, folder / "disc", out=out, shard_size=8)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SpecError, match="not an audit"):
        audit(lm, folder, out=other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpecError, match="not a directory"):
        audit(lm, folder, out=tmp_path / "file")


@pytest.mark.parametrize("kwargs, param", [
    ({"method": "gradcma"}, "method"), ({"method": "gradcam,gradcam++"}, "method"), ({"target": "truth"}, "target"),
    ({"top_k": 0}, "top_k"), ({"shard_size": 0}, "shard_size"), ({"batch_size": 0}, "batch_size"),
    ({"engine": "spark"}, "engine"), ({"address": "auto"}, "address"), ({"layer": "nope"}, "layer"),
    ({"replace": "smudge"}, "replace"), ({"replace": None}, "replace"),
])
def test_bad_options_name_their_parameter(lm, folder, tmp_path, kwargs, param):
    with pytest.raises(ConvlensError) as e:
        audit(lm, folder, out=tmp_path / "o", **kwargs)
    assert e.value.param == param and not (tmp_path / "o").exists()


# -- the command line --------------------------------------------------------------------------

def run_cli(capsys, *args):
    code = main(list(args))
    got = capsys.readouterr()
    return code, got.out, got.err


def test_cli_json_and_table(capsys, trained_run, folder, tmp_path):
    out = tmp_path / "cli"
    code, stdout, err = run_cli(capsys, "audit", str(folder), "--model", str(trained_run), "--out", str(out),
                                "--shard-size", "6", "--json")
    assert code == 0, err
    d = json.loads(stdout)
    check_json_shape(d, 14)
    assert len(d["skipped"]) == 1 and "warning: skipped 1 unreadable" in err
    assert read_manifest(out, finished=True)["model"]
    code, stdout, err = run_cli(capsys, "audit", str(folder), "--model", str(trained_run), "--out", str(out),
                                "--shard-size", "6")
    assert code == 0, err
    assert "resuming: 15 of 15" in err and "disc" in stdout and "wrote the audit to" in stdout


@pytest.mark.parametrize("case, message", [
    ("empty", "folder holds no image files"),
    ("outfile", "--out"),
    ("outother", "holds files that are not an audit"),
    ("engine", "--engine must be 'local' or 'ray'"),
    ("topk", "--top-k must be"),
    ("address", "--address joins a Ray cluster"),
    ("replace", "--replace must be mean, blur or inpaint (got 'smudge')"),
])
def test_cli_bad_input_exit_2_one_line(capsys, trained_run, folder, tmp_path, case, message):
    data, extra = str(folder), []
    out = tmp_path / "o"
    if case == "empty":
        (tmp_path / "e").mkdir()
        data = str(tmp_path / "e")
    elif case == "outfile":
        out.write_text("x")
    elif case == "outother":
        out.mkdir()
        (out / "a.txt").write_text("x")
    elif case == "engine":
        extra = ["--engine", "spark"]
    elif case == "topk":
        extra = ["--top-k", "0"]
    elif case == "address":
        extra = ["--address", "auto"]
    elif case == "replace":
        extra = ["--replace", "smudge"]
    code, stdout, err = run_cli(capsys, "audit", data, "--model", str(trained_run), "--out", str(out), "--json", *extra)
    assert code == 2 and message in err and err.count("\n") == 1 and stdout == "", err
    assert case in ("outfile", "outother") or not out.exists()


# -- the web view --------------------------------------------------------------------------

def test_web_audit_view(lm, folder, tmp_path):
    from fastapi.testclient import TestClient

    from convlens.web import create_app

    runs = tmp_path / "runs"
    quiet_audit(lm, folder, out=runs / "shapes-audit", shard_size=8)
    with pytest.raises(KeyboardInterrupt):
        quiet_audit(lm, folder, out=runs / "half", shard_size=4,
                    progress=lambda done, total: (_ for _ in ()).throw(KeyboardInterrupt))
    client = TestClient(create_app(models=[lm], runs_dir=runs), base_url="http://localhost")
    r = client.get("/api/audits")
    assert r.status_code == 200
    rows = {a["id"]: a for a in r.json()}
    assert set(rows) == {"shapes-audit", "half"}
    assert rows["shapes-audit"]["state"] == "done" and rows["shapes-audit"]["images"] == 14
    assert rows["half"]["state"] == "interrupted"
    r = client.get("/api/audits/shapes-audit")
    assert r.status_code == 200
    check_json_shape({k: r.json()[k] for k in ("images", "skipped", "accuracy", "classes", "findings")}, 14)
    assert str(folder.parent) not in json.dumps(r.json()) and str(runs) not in json.dumps(r.json())
    assert r.json()["skipped"] == [{"image": "shapes/ring/broken.png", "skipped": r.json()["skipped"][0]["skipped"]}]
    r = client.get("/api/audits/shapes-audit/overview.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    page = client.get("/audits/shapes-audit")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "data-set audit" in page.text and "<style>" not in page.text and "/render-static/style.css" in page.text
    assert "data:image/jpeg" in page.text and str(folder.parent) not in page.text
    assert "shapes/ring/broken.png" in page.text
    css = client.get("/audits/audit.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"] and ".cluster" in css.text
    index = client.get("/audits")
    assert index.status_code == 200 and "shapes-audit" in index.text
    for url in ("/api/audits/nope", "/audits/nope", "/api/audits/..%2Fx", "/api/audits/nope/overview.png"):
        assert client.get(url).status_code == 404, url
    r = client.get("/api/audits/half")
    assert r.status_code == 409 and "unfinished" in r.json()["error"]
    assert client.get("/audits/half").status_code == 409
    bare = TestClient(create_app(models=[lm]), base_url="http://localhost")
    r = bare.get("/api/audits")
    assert r.status_code == 404 and "--runs" in r.json()["error"]


# -- the acceptance test: a planted shortcut ----------------------------------------------------

#: the shortcut test's shapes: large (radius 9-12 px of 32) and faint (12 grey levels in noise of 25).
#: Why (measured over 13 seed triples, see issue 13): with the small bright shapes of the other tests
#: (radius 5-8, contrast 40) the disc is as easy to learn as the patch, so whether a model trained on
#: patched discs used the patch at all hung on the seeds (4 of 13 looked at the disc: nothing to find,
#: or a false flag on it), and a clean model's evidence for a disc was itself a small spot (~10% of the
#: input) where the rings do not peak, a "possible shortcut" by every measure the audit has (5 of 13
#: clean models flagged). Large faint shapes make the patch the easier cue and a disc's own evidence
#: wide (clean spots 14-19% of the input): over 12 seed triples, 11 patched models flagged on the
#: patch (the 12th peaks on it with a wider spot), 0 of 12 clean models flagged.
SHORTCUT_SHAPES = {"contrast": 12.0, "radius": (9, 12), "centre": (13, 19)}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_a_planted_shortcut_and_none_without_it(tmp_path, seed):
    """Two classes (a large faint disc or ring in noise); the discs of the training set carry a dark patch
    in the top-right corner. A CNN trained on that, audited on test images whose discs carry the
    patch, gets a flagged cluster of the disc class whose mean map peaks on the patch; the same
    audit of the same CNN trained on clean images flags none. Three seeds (data, test images and
    training all change with it): the result must not hang on one draw."""
    rng = np.random.default_rng(seed)
    n = 300
    clean = np.concatenate([shapes(n, 0, rng, **SHORTCUT_SHAPES), shapes(n, 1, rng, **SHORTCUT_SHAPES)])
    rng = np.random.default_rng(seed)
    patched = np.concatenate([shapes(n, 0, rng, patch=True, **SHORTCUT_SHAPES), shapes(n, 1, rng, **SHORTCUT_SHAPES)])
    y = np.array([0] * n + [1] * n)
    test = write_folder(tmp_path / "test", 24, seed=7 + seed, patch_class=0, **SHORTCUT_SHAPES)
    found = {}
    for name, x in (("patched", patched), ("clean", clean)):
        run = cl.train((x, y), class_names=list(CLASSES), arch="conv8-pool-conv16-pool-conv32-gap", epochs=15,
                       batch_size=32, progress=False, val=0.1, test=0.1, seed=seed)
        assert run.summary()["accuracy"] >= 0.8, name
        res, _ = quiet_audit(run.model(), test, out=tmp_path / f"audit-{name}")
        found[name] = res
    # issue 29: the patch is a finding of the disc class, proven by masking it against random regions
    regions = [f for f in found["patched"].findings if not isinstance(f["region"], str)]
    assert regions and {f["class"] for f in regions} == {"disc"}, found["patched"].findings
    patch_box = ((S - 5) / S, 1 / S, (S - 1) / S, 5 / S)  # (x0, y0, x1, y1): the top-right corner
    for f in regions:
        assert iou(f["region"], patch_box) > 0, f
        assert f["constant_content"] is True and f["effect"] > f["control"] and f["ci"][0] > 0
        assert "top-right corner" in f["why"] and "random regions of that size" in f["why"]
    for f in found["patched"].flagged():
        assert f["why"].startswith("shortcut:")
    assert not [f for f in found["clean"].findings if not isinstance(f["region"], str)]
    assert found["clean"].flagged() == []
    assert all(not k["flagged"] for c in found["clean"].to_dict()["classes"] for k in c["clusters"])
    html = (tmp_path / "audit-patched" / "index.html").read_text()
    assert "findings: proven by intervention" in html


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities: POSIX")
def test_decoding_and_writing_threads_yield_to_the_model(lm, folder, tmp_path, monkeypatch):
    """The threads that feed the model run at nice +19 (convlens/_threads.py), the model's at the caller's."""
    import threading

    from convlens.audit import engine

    seen: dict[str, set[int]] = {"decode": set(), "write": set(), "model": set()}
    me = lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # noqa: E731
    make_decoder, write_shard, batch = engine.decoder, engine.write_shard, engine.Explainer.batch

    def decoder(lm_):
        decode = make_decoder(lm_)
        return lambda item: (seen["decode"].add(me()), decode(item))[1]

    monkeypatch.setattr(engine, "decoder", decoder)
    monkeypatch.setattr(engine, "write_shard", lambda *a, **k: (seen["write"].add(me()), write_shard(*a, **k))[1])
    monkeypatch.setattr(engine.Explainer, "batch", lambda self, *a: (seen["model"].add(me()), batch(self, *a))[1])
    quiet_audit(lm, folder, out=tmp_path / "a", shard_size=4)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen["model"] == {base}
    assert seen["decode"] == seen["write"] == {min(19, base + 19)}


@pytest.mark.parametrize("resize, crop, interp", [(40, 32, "bilinear"), ((36, 30), (32, 28), "bicubic"),
                                                  (32, 32, "nearest"), (64, 56, "bilinear")])
def test_the_ray_workers_preprocessing_is_the_models_bit_for_bit(resize, crop, interp):
    """What the Ray engine ships to its workers instead of the model's torchvision/timm transform
    (so that they import neither) gives the same tensors; a step it does not do keeps the original."""
    import pickle

    from torchvision import transforms as T

    from convlens.audit.ray_engine import PortableTransform, portable_transform

    mode = getattr(T.InterpolationMode, interp.upper())
    tf = T.Compose([T.Resize(resize, interpolation=mode), T.CenterCrop(crop), T.ToTensor(),
                    T.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])])
    port = pickle.loads(pickle.dumps(portable_transform(tf)))
    assert isinstance(port, PortableTransform)
    rng = np.random.default_rng(0)
    for w, h in [(50, 40), (33, 77), (32, 32), (120, 64)]:
        pic = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        assert torch.equal(port(pic), tf(pic)), (w, h)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB")
    assert port.crop[0] > 8 or torch.equal(port(small), tf(small))
    odd = T.Compose([T.Resize(40), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    assert portable_transform(odd) is odd
