"""Shortcuts proven by intervention (issue 29): the audit tests the regions its maps suggest (and the
global statistics) by masking them against random regions of the same size, and reports a finding
only when the effect beats the control with 95% confidence on an artifact.

Planted sets are built from real MNIST digits (``../shared/data``, marker ``data``): two look-alike
digits (4 and 9) under noise, so that the planted cue is the easier one, as a shortcut is; each
planted cue is found with its numbers, the clean set flags nothing.  The verdicts' own logic is
tested on hand-made tables (no model), and one planted set is synthetic (no data folder).
"""

from __future__ import annotations

import gzip
import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image, ImageDraw

import convlens as cl
from conftest import DATA
from convlens.audit import audit
from convlens.audit import interventions as iv

CLASSES = ["four", "nine"]
SEEDS = [0, 1, 2, 3, 4]
PATCH = 6  # side of the planted patch (pixels of 28)


# -- the verdicts on hand-made tables ----------------------------------------------------------------

def table(rows: list[dict]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in iv.schema()}
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in iv.schema()], schema=iv.schema())


def rows_for(n: int, *, region_after: float, control_after: float, content, seed: int = 0) -> list[dict]:
    """``n`` images of class 0 predicted 0 at probability 0.95; masking the region leaves
    ``region_after``, each of 4 control places ``control_after`` (prediction 1 when below 0.5);
    ``content(i)``: the region's pooled pixels of image ``i``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = {"test": 0, "index": i, "klass": 0, "label": 0, "target": 0, "pred_before": 0, "prob_before": 0.95}
        after = float(np.clip(region_after + rng.normal(0, 0.02), 0, 1))
        out.append({**base, "kind": "region", "position": -1, "prob_after": after, "pred_after": int(after < 0.5),
                    "content": content(i)})
        for q in range(4):
            a = float(np.clip(control_after + rng.normal(0, 0.02), 0, 1))
            out.append({**base, "kind": "control", "position": q, "prob_after": a, "pred_after": int(a < 0.5),
                        "content": list(rng.uniform(0, 1, 16))})
    return out


PLAN = {"candidates": [{"box": [0.8, 0.8, 1.0, 1.0], "klass": 0, "source": "test", "clusters": [0]}],
        "statistics": [], "controls": [[[0, 0]] * 4], "sample": {"0": list(range(20))}, "seed": 0}


def test_a_constant_region_that_flips_the_class_is_a_finding_with_its_numbers():
    t = table(rows_for(20, region_after=0.1, control_after=0.94, content=lambda i: [0.8] * 16))
    (v,) = iv.verdicts(t, PLAN, CLASSES)
    assert v.found
    f = v.finding(CLASSES)
    assert f["class"] == "four" and f["region"] == [0.8, 0.8, 1.0, 1.0] and f["constant_content"] is True
    assert f["measure"] == "flip rate"
    assert f["effect"] == 1.0 and f["control"] == 0.0 and f["ci"][0] > 0.9
    assert f["accuracy_without"] == 0.0
    assert "changes 100% of 'four' predictions to 'nine'" in f["why"]
    assert "random regions of that size: 0.0%" in f["why"]


def test_a_region_whose_pixels_vary_is_the_object_not_a_finding():
    rng = np.random.default_rng(1)
    t = table(rows_for(20, region_after=0.1, control_after=0.94, content=lambda i: list(rng.uniform(0, 1, 16))))
    (v,) = iv.verdicts(t, PLAN, CLASSES)
    assert not v.found and v.numbers["significant"] and v.numbers["constant_content"] is False
    assert "the object itself" in v.why


def test_no_more_effect_than_random_regions_is_no_finding():
    t = table(rows_for(20, region_after=0.6, control_after=0.6, content=lambda i: [0.8] * 16))
    (v,) = iv.verdicts(t, PLAN, CLASSES)
    assert not v.found and not v.numbers["significant"]
    assert v.numbers["ci"][0] <= 0 <= v.numbers["ci"][1] + 1e-9


def test_a_patch_on_some_images_is_measured_on_the_images_that_hold_it():
    # 14 of 20 hold the patch (and lose the class when it is masked); the other 6 hold noise there
    rng = np.random.default_rng(2)
    rows = rows_for(20, region_after=0.1, control_after=0.94,
                    content=lambda i: [0.8] * 16 if i < 14 else list(rng.uniform(0, 1, 16)))
    for r in rows:
        if r["kind"] == "region" and r["index"] >= 14:
            r["prob_after"], r["pred_after"] = 0.94, 0
    (v,) = iv.verdicts(table(rows), PLAN, CLASSES)
    assert v.found and v.numbers["holders"] == 0.7 and v.numbers["effect"] == 1.0 and v.numbers["images"] == 14


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    d = np.random.default_rng(0).normal(0.3, 0.1, 40)
    lo, hi = iv.bootstrap(d, seed=3)
    assert (lo, hi) == iv.bootstrap(d, seed=3) and lo < d.mean() < hi and hi - lo < 0.1


def test_the_object_control_is_reported_beside_the_finding():
    """Masking each image's object (its map's main blob outside the region) is measured and reported with
    the finding ("masking the corner flips 100%; masking the object 15%"), in the finding's measure."""
    rows = rows_for(20, region_after=0.1, control_after=0.94, content=lambda i: [0.8] * 16)
    for i in range(20):  # 3 of the 20 images lose the class when their object is masked
        after = 0.3 if i < 3 else 0.9
        rows.append({"kind": "object", "test": 0, "position": -1, "index": i, "klass": 0, "label": 0, "target": 0,
                     "pred_before": 0, "prob_before": 0.95, "prob_after": after, "pred_after": int(after < 0.5)})
    plan = {**PLAN, "replace": "blur", "objects": [{str(i): [0.2, 0.2, 0.6, 0.7] for i in range(20)}]}
    (v,) = iv.verdicts(table(rows), plan, CLASSES)
    f = v.finding(CLASSES)
    assert v.found and f["replace"] == "blur" and f["effect"] == 1.0 and f["object_effect"] == 0.15
    assert v.numbers["object_images"] == 20 and v.numbers["object_area"] == 0.2
    assert abs(v.numbers["object_drop"] - (3 * 0.65 + 17 * 0.05) / 20) < 0.01
    assert "blurred) changes 100% of 'four' predictions" in f["why"]
    assert "masking each image's object instead" in f["why"] and "20% of the input on average" in f["why"]
    assert "changes 15% of 'four' predictions" in f["why"]
    (v,) = iv.verdicts(table(rows_for(20, region_after=0.1, control_after=0.94, content=lambda i: [0.8] * 16)),
                       {**PLAN, "objects": [{}]}, CLASSES)  # no image had an object
    assert v.found and v.finding(CLASSES)["object_effect"] is None and "no object to mask" in v.why


@pytest.mark.parametrize("how", ["mean", "blur", "inpaint"])
def test_each_replacement_takes_a_patch_away_and_leaves_the_rest(how):
    """A white patch in a corner of noisy grey images: replaced, its pixels come near the surroundings'
    (the mean colour, a blur that smears it away, an inpainting from its border); nothing outside the
    box changes; the inpainting's noise is seeded."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(np.clip(rng.normal(0.3, 0.05, (6, 3, 28, 28)), 0, 1), dtype=torch.float32)
    x[:, :, 20:26, 20:26] = 1.0
    fill = x.mean(dim=(0, 2, 3))
    box = (20, 20, 26, 26)
    out = iv.replaced(x, box, how, fill, seed=5)
    inside = out[:, :, 20:26, 20:26]
    if how == "mean":
        assert torch.equal(inside, fill.view(1, 3, 1, 1).expand_as(inside))
    elif how == "blur":  # mostly the surroundings, a little of the patch, most of it nearest the image's corner
        assert 0.3 < float(inside.mean()) < 0.5 and (inside[:, :, -1, -1] > inside[:, :, 0, 0]).all()
    else:  # solved from the border (grey), with a little noise
        assert abs(float(inside.mean()) - 0.3) < 0.03 and 0.003 < float(inside.std()) < 0.05
    rest = torch.ones(28, 28, dtype=torch.bool)
    rest[20:26, 20:26] = False
    assert torch.equal(out[:, :, rest], x[:, :, rest])
    assert torch.equal(out, iv.replaced(x, box, how, fill, seed=5))
    # one box per image, as the object control replaces them
    each = [(0, 0, 4, 4)] * 3 + [(20, 20, 26, 26)] * 3
    per = iv.replaced(x, each, how, fill, seed=5)
    assert torch.equal(per[:3, :, 4:, 4:], x[:3, :, 4:, 4:]) and (per[3:, :, 20:26, 20:26].mean() - 0.3).abs() < 0.2
    with pytest.raises(cl.errors.SpecError, match="replace must be mean, blur or inpaint"):
        iv.replaced(x, box, "smudge", fill)


# -- planted sets from real digits -------------------------------------------------------------------

def mnist() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(DATA / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x, y


def planted(kind: str, seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Fours and nines (``n`` each, drawn with ``seed``) at half contrast under noise; ``kind`` plants
    on the fours: ``patch`` (a white 6x6 square in the bottom-right corner of every four), ``patch70``
    (the same on 70% of them), ``watermark`` (the text "wm" in the top-left corner), ``bright``
    (every four at 45% of its brightness); ``clean`` plants nothing."""
    x_all, y_all = mnist()
    rng = np.random.default_rng(seed)
    pick = [rng.choice(np.flatnonzero(y_all == d), n, replace=False) for d in (4, 9)]
    x = np.concatenate([x_all[p] for p in pick]).astype(np.float64)
    y = np.array([0] * n + [1] * n)
    x = np.clip(x * 0.5 + np.random.default_rng(seed + 7).normal(60, 40, x.shape), 0, 255).astype(np.uint8)
    fours = np.flatnonzero(y == 0)
    if kind == "patch":
        x[fours, 27 - PATCH:27, 27 - PATCH:27] = 255
    elif kind == "patch70":
        some = fours[np.random.default_rng(seed + 100).random(len(fours)) < 0.7]
        x[some, 27 - PATCH:27, 27 - PATCH:27] = 255
    elif kind == "watermark":
        im = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(im).text((1, 0), "wm", fill=255)
        mark = np.asarray(im)[:9, :14] > 0
        for i in fours:
            x[i, :9, :14][mark] = 255
    elif kind == "bright":
        x[fours] = (x[fours] * 0.45).astype(np.uint8)
    return x, y


def train_and_audit(kind: str, seed: int, tmp_path) -> cl.audit.Audit:
    x, y = planted(kind, seed)
    run = cl.train((x, y), class_names=CLASSES, arch="conv8-pool-fc32", epochs=4, batch_size=32, progress=False,
                   val=0.1, test=0.2, seed=seed, out=str(tmp_path / f"run-{kind}-{seed}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit(run.model(), f"run:{tmp_path / f'run-{kind}-{seed}'}:test", out=tmp_path / f"audit-{kind}-{seed}")


#: where each planted cue is, as a box of the input (x0, y0, x1, y1)
WHERE = {"patch": (21 / 28, 21 / 28, 1.0, 1.0), "patch70": (21 / 28, 21 / 28, 1.0, 1.0),
         "watermark": (0.0, 0.0, 15 / 28, 10 / 28)}


def check(kind: str, res) -> None:
    d = res.to_dict()
    regions = [f for f in d["findings"] if not isinstance(f["region"], str)]
    if kind == "clean":
        assert regions == [], regions
        assert not any(k["flagged"] for c in d["classes"] for k in c["clusters"])
        return
    if kind == "bright":
        found = [f for f in d["findings"] if f["region"] == "global:brightness" and f["class"] == "four"]
        assert found, d["findings"]
        f = found[0]
        assert f["effect"] > f["control"] and f["ci"][0] > 0 and f["constant_content"] is None
        assert f["measure"] in ("flip rate", "probability drop")
        assert "a property of the data the model uses" in f["why"] and "brightness" in f["why"]
        assert regions == [], regions
        return
    assert regions and {f["class"] for f in regions} == {"four"}, d["findings"]
    for f in regions:
        assert iv.iou(f["region"], WHERE[kind]) > 0, (f["region"], kind)  # on the planted cue
        assert f["constant_content"] is True and f["ci"][0] > 0 and f["effect"] > f["control"]
        assert "masking a region" in f["why"] and "random regions of that size" in f["why"]
        assert f["accuracy_without"] is not None and f["replace"] == res.plan["replace"]
        assert "object_effect" in f
    # flagged exactly when one of its candidates became a finding
    summary = json.loads((res.out / "summary.json").read_text())
    assert summary["findings"] == d["findings"]
    assert all(k["flagged"] == k["why"].startswith("shortcut:") for c in d["classes"] for k in c["clusters"])
    html = (res.out / "index.html").read_text()
    assert "findings: proven by intervention" in html and "masked:" in html


@pytest.mark.data
def test_a_constant_corner_patch_on_one_class_is_found_with_its_numbers(tmp_path):
    """The issue's case: both classes look at the corner; masking it changes the fours' predictions."""
    res = train_and_audit("patch", 0, tmp_path)
    check("patch", res)
    (f,) = [f for f in res.findings if f["class"] == "four" and not isinstance(f["region"], str)]
    assert f["effect"] >= 0.3 and f["control"] <= 0.1 and f["replace"] == "mean"
    # the object control beside it: the fours' own strokes matter little to a model that learned the patch
    assert f["object_effect"] is not None and f["object_effect"] < f["effect"] - 0.3, f
    assert "masking each image's object instead" in f["why"]
    html = (res.out / "index.html").read_text()
    assert "random place masked:" in html and "object masked:" in html and "each image's object masked" in html
    # the explorer's audit view shows the same evidence, under its Content-Security-Policy (no inline style)
    from fastapi.testclient import TestClient

    from convlens.web import create_app

    client = TestClient(create_app(models=[], runs_dir=tmp_path), base_url="http://localhost")
    page = client.get("/audits/audit-patch-0")
    assert page.status_code == 200 and "findings: proven by intervention" in page.text
    assert "object masked:" in page.text and "data:image/png" in page.text and 'style="' not in page.text
    (tested,) = [t for t in client.get("/api/audits/audit-patch-0").json()["tested"] if t["found"] and
                 not isinstance(t["region"], str)]
    assert len(tested["control_distribution"]) == iv.CONTROLS and tested["object_effect"] == f["object_effect"]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["patch", "patch70", "watermark", "bright", "clean"])
def test_planted_cues_are_found_and_clean_data_flags_nothing_for_every_seed(kind, seed, tmp_path):
    check(kind, train_and_audit(kind, seed, tmp_path))


# -- a synthetic planted set (no data folder) -----------------------------------------------------------

def synthetic(seed: int, patch: bool, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Faint bars, horizontal (class 0) or vertical (class 1), in noise; ``patch``: a bright 5x5 square
    in the top-left corner of every class-0 image."""
    rng = np.random.default_rng(seed)
    x = rng.normal(90, 30, (2 * n, 24, 24))
    y = np.array([0] * n + [1] * n)
    for i in range(2 * n):
        p = rng.integers(6, 18)
        if y[i] == 0:
            x[i, p:p + 2, 4:20] += 25
        else:
            x[i, 4:20, p:p + 2] += 25
        if patch and y[i] == 0:
            x[i, 1:6, 1:6] = 250
    return np.clip(x, 0, 255).astype(np.uint8), y


@pytest.mark.parametrize("patch", [True, False])
def test_synthetic_planted_patch_is_found_and_its_clean_twin_flags_nothing(tmp_path, patch):
    """With every replacement (the mean colour, a blur, ROAD's inpainting): the same audit directory run
    again with another replacement redoes only the interventions, and its verdicts are its own."""
    x, y = synthetic(0, patch)
    run = cl.train((x, y), class_names=["flat", "tall"], arch="conv8-pool-fc32", epochs=3, batch_size=32,
                   progress=False, val=0.1, test=0.25, seed=0, out=str(tmp_path / "run"))
    stamps = None
    for how in ("mean", "blur", "inpaint"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = audit(run.model(), f"run:{tmp_path / 'run'}:test", out=tmp_path / "audit", replace=how)
        assert res.plan["replace"] == how and json.loads((tmp_path / "audit" / "interventions.json").read_text())[
            "replace"] == how
        assert {v.numbers.get("replace") for v in res.verdicts if v.test[0] == "region"} == {how}
        regions = [f for f in res.findings if not isinstance(f["region"], str)]
        if patch:
            assert regions and {f["class"] for f in regions} == {"flat"}, (how, res.findings)
            assert all(iv.iou(f["region"], (1 / 24, 1 / 24, 6 / 24, 6 / 24)) > 0 for f in regions)
            assert all(f["replace"] == how and f["effect"] > f["control"] for f in regions)
        else:
            assert regions == [] and not res.flagged(), (how, res.findings)
        summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
        assert summary["findings"] == res.to_dict()["findings"]
        shards = {q.name: q.stat().st_mtime_ns for q in (tmp_path / "audit" / "shards").iterdir()}
        assert stamps is None or shards == stamps  # the maps were not redone
        stamps = shards


@pytest.mark.data
@pytest.mark.slow
def test_a_model_trained_on_clean_defungi_flags_no_region(tmp_path):
    """Never cry wolf on real microscopy (issue 29: a clean DeFungi model once had a cluster flagged in
    a corner that holds nothing): no region is a finding, no cluster is flagged; a global statistic
    that differs between the species, if the model uses it, is worded as a property of the data."""
    run = cl.train(str(DATA / "defungi" / "train"), arch="conv8-pool-conv16-pool-fc32", size="32x32", epochs=3,
                   batch_size=32, progress=False, val=0.1, test=0.0, seed=0, out=str(tmp_path / "run"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit(run.model(), DATA / "defungi" / "test", out=tmp_path / "audit")
    d = res.to_dict()
    assert d["images"] == 312
    assert [f for f in d["findings"] if not isinstance(f["region"], str)] == [], d["findings"]
    assert not any(k["flagged"] for c in d["classes"] for k in c["clusters"])
    for f in d["findings"]:
        assert f["region"].startswith("global:") and "a property of the data the model uses" in f["why"]
    assert len(res.verdicts) >= 2 * 4  # every class's statistics (and any region) were tested
