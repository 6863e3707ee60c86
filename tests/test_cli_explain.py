"""`convlens explain`: files under --out, --json contract, directories, bad input -> exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convlens.cli import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, sample_photos):
    d = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee"):
        Image.open(sample_photos[name]).save(d / f"{name}.png")
    return d


def test_explain_directory_json_and_files(capsys, tmp_path, photo_dir):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "explain", str(photo_dir), "--method", "gradcam,eigencam",
                            "--target", "top2", "--out", str(out), "--json")
    assert code == 0, err
    records = json.loads(stdout)  # stdout holds JSON only
    assert len(records) == 2 * 2 * 2  # images x methods x targets
    r = records[0]
    assert set(r) == {"image", "method", "layer", "target", "heatmap", "overlay", "peak", "empty"}
    assert r["empty"] is False  # a map with positive evidence (an empty one says true, drawn with a note)
    assert r["layer"] == "bn2" and set(r["target"]) == {"index", "label", "probability"}
    for rec in records:
        heat = np.load(rec["heatmap"])
        w, h = Image.open(rec["image"]).size
        assert heat.dtype == np.float32 and heat.shape == (h, w)
        assert 0.0 <= heat.min() and heat.max() <= 1.0 and heat.max() > 0.9
        assert Image.open(rec["overlay"]).size == (w, h)
        x, y = rec["peak"]
        assert heat[y, x] > 0.9
    cat = [rec for rec in records if "chelsea" in rec["image"]][0]
    assert cat["target"]["index"] in (281, 282, 285)
    assert (out / "chelsea" / "grid.png").is_file() and (out / "coffee" / "grid.png").is_file()
    assert not list(out.rglob("*.tmp"))


def test_explain_human_output_and_layer(capsys, sample_photos):
    code, stdout, err = run(capsys, "explain", str(sample_photos["chelsea"]), "--layer", "blocks.5",
                            "--target", "tabby cat")
    assert code == 0, err
    assert "blocks.5" in stdout and "tabby" in stdout


@pytest.mark.parametrize("args, message", [
    (["--method", "gradcma"], "unknown --method 'gradcma'"),
    (["--layer", "conv_haed"], "layer 'conv_haed'"),
    (["--layer", "classifier"], "no spatial output"),
    (["--target", "1000"], "class index 1000 is out of range"),
    (["--target", "bull mastif"], "did you mean: bull mastiff"),
    (["--cmap", "jett"], "unknown colour map"),
])
def test_bad_input_exit_2(capsys, tmp_path, sample_photos, args, message):
    code, stdout, err = run(capsys, "explain", str(sample_photos["coffee"]), *args, "--out", str(tmp_path / "o"))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert stdout == ""
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_bad_image_exit_2(capsys, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "explain", str(bad))
    assert code == 2 and "broken.png" in err
