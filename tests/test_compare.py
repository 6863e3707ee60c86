"""compare(runs) -> Comparison, and `convlens compare RUN RUN...`."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from convlens.cli import main
from convlens.errors import RunError, SpecError
from convlens.train import Comparison, Run, compare, train


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    train("digits", arch="conv8-pool-conv16-pool-fc32", epochs=2, batch_size=64, progress=False, out=root / "conv")
    train("digits", arch="fc32", epochs=2, batch_size=64, progress=False, out=root / "dense")
    return root / "conv", root / "dense"


def test_compare_puts_runs_side_by_side(two_runs, tmp_path):
    cmp = compare(list(two_runs), top_n=4)
    assert isinstance(cmp, Comparison) and cmp.names == ["conv", "dense"]
    rows = cmp.table()
    assert [r["arch"] for r in rows] == ["conv8-pool-conv16-pool-fc32", "fc32"]
    # dense: 64*32 + 32 + 32*10 + 10 parameters
    assert rows[1]["params"] == 64 * 32 + 32 + 330 and rows[1]["trainable"] == rows[1]["params"]
    for r, d in zip(rows, two_runs):
        assert r["accuracy"] == pytest.approx(json.loads((d / "metrics.json").read_text())["accuracy"])
        assert r["seconds"] > 0 and r["epochs"] == 2
    # the same images for every run, the hardest first (mean loss over the runs)
    assert len(cmp.shared) == 4 and cmp.n_common == 359
    means = [sum(x["loss"] for x in s["runs"]) / 2 for s in cmp.shared]
    assert means == sorted(means, reverse=True)
    assert cmp.cams[0] is not None and len(cmp.cams[0]) == 4
    assert cmp.cams[1] is None and "no convolutional layer" in cmp.cam_notes[1]  # all-dense: no CAM
    before = json.dumps(cmp.to_dict())
    saved = cmp.save(tmp_path / "out")
    assert json.dumps(cmp.to_dict()) == before  # to_dict is pure
    assert {p.name for p in saved.paths()} == {"comparison.png", "curves.png", "confusion.png", "shared.png",
                                               "comparison.json", "comparison.csv"}
    assert set(json.loads((tmp_path / "out" / "comparison.json").read_text())["confusion"]) == {"conv", "dense"}
    assert (tmp_path / "out" / "comparison.csv").read_text().splitlines()[0].startswith("run,path,arch")
    img = Image.open(saved.first("figure"))
    assert img.width >= 900 and img.height > 900
    assert isinstance(cmp._repr_png_(), bytes)


def test_compare_takes_run_objects(two_runs):
    runs = [Run.load(p) for p in two_runs]
    cmp = compare(runs, top_n=0, cams=False)
    assert cmp.shared == [] and cmp.shared_figure() is None and cmp.figure().width > 0


def _edit(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        cfg[key] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_runs_of_different_data_are_refused_in_one_line(two_runs, tmp_path):
    other = _edit(two_runs[1], tmp_path / "faces", data={"kind": "folder", "path": "/somewhere/faces"})
    with pytest.raises(RunError, match=r"faces was trained on folder:/somewhere/faces and conv on digits; "
                                       r"only runs of the same data") as e:
        compare([two_runs[0], other])
    assert e.value.param == "runs" and "\n" not in str(e.value)
    renamed = _edit(two_runs[1], tmp_path / "renamed", class_names=[f"c{i}" for i in range(10)])
    with pytest.raises(RunError, match="only runs of the same classes"):
        compare([two_runs[0], renamed])


@pytest.mark.parametrize("runs, error, message", [
    (lambda r: [r[0]], SpecError, "at least two runs"),
    (lambda r: [r[0], "/no/such/run"], RunError, "no such run directory"),
    (lambda r: [r[0], 3], SpecError, "int is not a run"),
])
def test_bad_runs(two_runs, runs, error, message):
    with pytest.raises(error, match=message):
        compare(runs(two_runs))


def test_cli_compare_json_and_files(two_runs, tmp_path, capsys):
    code = main(["compare", str(two_runs[0]), str(two_runs[1]), "--out", str(tmp_path / "c"), "--json", "--top", "3"])
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert [r["run"] for r in doc["runs"]] == ["conv", "dense"] and len(doc["shared"]) == 3
    assert (tmp_path / "c" / "comparison.png").is_file() and doc["saved"]["files"]["figure"]
    code = main(["compare", str(two_runs[0]), str(two_runs[1]), "--no-cams"])
    out = capsys.readouterr()
    assert code == 0 and "dense" in out.out and "conv" in out.out and "compare (digits)" in out.out


def test_cli_compare_bad_input_is_one_line(two_runs, tmp_path, capsys):
    other = _edit(two_runs[1], tmp_path / "faces", data={"kind": "folder", "path": "/somewhere/faces"})
    code = main(["compare", str(two_runs[0]), str(other)])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert out.err.startswith("convlens: error: RUNS: faces was trained on") and out.err.count("\n") == 1
    code = main(["compare", str(two_runs[0])])
    assert code == 2 and "at least two runs" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_report_with_two_runs_is_a_comparison_page(two_runs, tmp_path, capsys):
    # `convlens report --run A --run B` once reported only B; now it compares them
    code = main(["report", "--run", str(two_runs[0]), "--run", str(two_runs[1]), "--out", str(tmp_path / "r"),
                 "--json", "--top-n", "3"])
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert doc["kind"] == "compare" and doc["source"] == [str(two_runs[0]), str(two_runs[1])]
    html = (tmp_path / "r" / "index.html").read_text()
    assert "<code>conv</code> vs <code>dense</code>" in html
    assert html.count('src="data:image/png;base64,') == 3  # curves, confusion matrices, the same images
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    for name in ("conv", "dense"):  # a row per run with its parameter count
        assert f"<tr><td><code>{name}</code></td>" in html
    code = main(["report", "--run", str(two_runs[0]), "--out", str(tmp_path / "one"), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["kind"] == "run"


def test_report_compare_bad_runs_one_line_nothing_written(two_runs, tmp_path, capsys):
    other = _edit(two_runs[1], tmp_path / "faces", data={"kind": "folder", "path": "/somewhere/faces"})
    for args, message in [
        (["--run", str(two_runs[0]), "--run", str(other)], "faces was trained on"),
        (["--run", str(two_runs[0]), "--run", str(two_runs[0])], "given twice"),
        (["--run", str(two_runs[0]), "--run", str(tmp_path)], "not a run directory"),
    ]:
        code = main(["report", *args, "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "r").exists()
