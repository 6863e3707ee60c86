"""`convlens score` and `convlens sanity`: the --json contracts, files under --out, bad input -> exit 2."""

from __future__ import annotations

import json

import pytest

from convlens.cli import cmd_sanity, cmd_score, main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def builtin(reuse_builtin):
    reuse_builtin(cmd_score)
    reuse_builtin(cmd_sanity)


def test_score_json_and_files(capsys, tmp_path, builtin, sample_photos):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "score", str(sample_photos["chelsea"]), str(sample_photos["coffee"]),
                            "--method", "gradcam", "--metric", "deletion,insertion,avgdrop,increase",
                            "--steps", "4", "--out", str(out), "--json")
    assert code == 0, err
    data = json.loads(stdout)
    assert set(data) == {"summary", "images"}
    assert {r["method"] for r in data["summary"]} == {"gradcam", "random", "centre"}
    assert all(set(r) == {"method", "metric", "mean", "low", "high", "n"} for r in data["summary"])
    assert len(data["summary"]) == 3 * 4 and all(r["n"] == 2 for r in data["summary"])
    assert len(data["images"]) == 2 * 3 * 4
    assert all({"image", "method", "metric", "value"} <= set(r) for r in data["images"])
    assert (out / "summary.json").is_file() and (out / "scores.png").is_file()
    assert len(list((out / "images").glob("*.csv"))) == 2 and len(list((out / "curves").glob("*.csv"))) == 2


def test_score_table_and_boxes(capsys, tmp_path, builtin, photos):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"both.png": {"243": [[75, 10, 165, 148]], "282": [[40, 120, 200, 224]]}}))
    code, stdout, err = run(capsys, "score", str(photos / "both.png"), "--metric", "pointing,energy",
                            "--boxes", str(boxes), "--target", "243", "--target", "282")
    assert code == 0, err
    assert "pointing" in stdout and "gradcam" in stdout and "random" in stdout and "centre" in stdout


@pytest.mark.parametrize("args, message", [
    (["--metric", "delet"], "unknown --metric 'delet'; did you mean: deletion"),
    (["--metric", "pointing"], "needs --boxes"),
    (["--steps", "0"], "--steps must be"),
    (["--steps", "100000"], "--steps must be a positive integer up to 1000"),
    (["--tolerance", "nan"], "--tolerance"),
    (["--tolerance", "1e39"], "--tolerance"),
    (["--batch-size", "0"], "--batch-size"),
    (["--method", "gradcma"], "gradcma"),
])
def test_score_bad_input_exit_2(capsys, builtin, sample_photos, args, message):
    code, stdout, err = run(capsys, "score", str(sample_photos["chelsea"]), *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_score_bad_boxes_exit_2(capsys, tmp_path, builtin, sample_photos):
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps({"other.png": [[0, 0, 4, 4]]}))
    code, _, err = run(capsys, "score", str(sample_photos["chelsea"]), "--metric", "energy", "--boxes", str(boxes))
    assert code == 2 and "not among the images" in err
    boxes.write_text(json.dumps({"chelsea.png": [[0, 0, 4000, 4]]}))
    code, _, err = run(capsys, "score", str(sample_photos["chelsea"]), "--metric", "energy", "--boxes", str(boxes))
    assert code == 2 and "outside the image" in err
    code, _, err = run(capsys, "score", str(sample_photos["chelsea"]), "--metric", "energy", "--boxes",
                       str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err


def test_sanity_json(capsys, tmp_path, builtin, sample_photos):
    out = tmp_path / "s"
    code, stdout, err = run(capsys, "sanity", str(sample_photos["chelsea"]), "--method", "gradcam", "--out", str(out),
                            "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    assert all(set(r) == {"method", "stage", "spearman", "ssim"} for r in rows)
    assert {r["method"] for r in rows} == {"gradcam", "edge"}
    stages = sorted({r["stage"] for r in rows})
    assert stages[0] == 0 and len(stages) >= 5
    first = [r for r in rows if r["stage"] == 0]
    assert all(abs(r["spearman"] - 1) < 1e-6 for r in first)
    assert (out / "sanity.json").is_file() and (out / "sanity.png").is_file() and (out / "sanity.csv").is_file()


def test_sanity_needs_out(capsys, builtin, sample_photos):
    code, _, err = run(capsys, "sanity", str(sample_photos["chelsea"]))
    assert code == 2 and "--out" in err


def test_score_one_step_the_documented_minimum(capsys, builtin, sample_photos):
    """--steps 1: deletion and insertion from the whole image to the baseline and back, no traceback."""
    code, stdout, err = run(capsys, "score", str(sample_photos["chelsea"]), "--method", "gradcam", "--steps", "1",
                            "--json")
    assert code == 0, err
    rows = json.loads(stdout)["summary"]
    assert {r["metric"] for r in rows} == {"deletion", "insertion"}
    by = {(r["method"], r["metric"]): r["mean"] for r in rows}
    # one interval: every map gives the same two points, so every method scores alike
    assert by[("gradcam", "deletion")] == pytest.approx(by[("random", "deletion")])
