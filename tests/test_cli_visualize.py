"""`convlens visualize`: JSON contract, reproducible PNGs, filters, examples, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.cli import main


def _run(capsys, *args):
    code = main(["visualize", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_json_lists_images_that_reproduce_their_activation(capsys, tmp_path, builtin_model):
    code, out, _ = _run(capsys, "--layer", "blocks.1", "--channels", "0,3", "--steps", "3", "--out", tmp_path, "--json")
    assert code == 0
    rows = json.loads(out)  # stdout is pure JSON
    assert [(r["layer"], r["channel"]) for r in rows] == [("blocks.1", 0), ("blocks.1", 3)]
    pix = []
    for r in rows:
        img = Image.open(r["image"])
        assert img.size == (224, 224) and img.mode == "RGB"
        pix.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1))
    from convlens.lens.featurevis import activation_of

    again = activation_of(builtin_model, "blocks.1", torch.stack(pix), [0, 3])
    np.testing.assert_allclose(again.numpy(), [r["activation"] for r in rows], rtol=1e-3, atol=1e-3)
    assert json.loads((tmp_path / "featurevis.json").read_text())["settings"]["steps"] == 3


def test_filters_json_names_nearest_kernels(capsys, tmp_path):
    code, out, _ = _run(capsys, "--filters", "--out", tmp_path, "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 32 and rows[0]["layer"] == "conv_stem"
    assert {"kernel", "similarity", "image"} <= set(rows[0]) and -1 <= rows[0]["similarity"] <= 1
    assert (tmp_path / "filters_conv_stem.png").exists()


@pytest.mark.data
def test_examples_rank_real_photos(capsys, tmp_path, photos):
    code, out, _ = _run(capsys, "--layer", "blocks.2", "--channels", "1", "--steps", "2", "--examples", photos,
                        "--top", "3", "--out", tmp_path, "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows[0]["examples"]) == 3
    acts = [e["activation"] for e in rows[0]["examples"]]
    assert acts == sorted(acts, reverse=True) and not any("truncated" in e["image"] for e in rows[0]["examples"])
    assert Image.open(rows[0]["examples_image"]).size[0] > 3 * 224


@pytest.mark.parametrize("args, text", [
    (["--layer", "blocks.99"], "unknown --layer 'blocks.99'"),
    (["--layer", "blocks.1", "--channels", "24"], "out of range"),
    (["--layer", "bn1", "--filters"], "not a conv"),
    (["--layer", "blocks.1", "--steps", "0"], "--steps"),
    (["--layer", "blocks.1", "--steps", "-3"], "--steps"),
    (["--objective", "class", "--classes", "1000"], "out of range"),
    (["--layer", "blocks.1", "--param", "wavelet"], "--param"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, args, text):
    code, out, err = _run(capsys, *args, "--out", tmp_path / "o", "--json")
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and text in lines[0] and lines[0].startswith("convlens: error:")
    assert not (tmp_path / "o").exists()  # nothing written
