"""A vision transformer end to end through the CLI (issue 28): ``explain``, ``score``, ``sanity`` and
``audit`` of ``timm:vit_small_patch16_224`` with random weights saved as safetensors in
``tmp_path`` (offline), on a few photos; small counts (few images, few steps)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from convlens.cli import main

VIT = "timm:vit_small_patch16_224"


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@pytest.mark.slow
def test_vit_explain_score_sanity_and_audit_from_the_cli(tmp_path, capsys, sample_photos):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("vit_small_patch16_224", pretrained=False)
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    model = ["--model", VIT, "--weights", str(weights)]
    photos = [str(sample_photos[k]) for k in ("chelsea", "coffee")]

    def run(*args):
        code = main([*args, *model, "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)

    # explain: Grad-CAM at the automatic layer (the last block's norm1, tokens on the 14x14 patch
    # grid, upsampled onto the photo) and attention rollout
    records = run("explain", photos[0], "--method", "gradcam,rollout", "--raw", "--out", str(tmp_path / "ex"))
    assert [r["method"] for r in records] == ["gradcam", "rollout"]
    assert records[0]["layer"] == "blocks.11.norm1"
    size = Image.open(photos[0]).size
    for r in records:
        heat = np.load(r["heatmap"])
        assert heat.shape == (size[1], size[0]) and np.isfinite(heat).all()
        assert 0 <= heat.min() and heat.max() <= 1
    assert any(not r["empty"] for r in records)
    raw = np.asarray(Image.open(records[0]["raw"]).convert("RGB")).astype(int)  # the grid, crisp cells
    side = raw.shape[0] // 14
    assert raw.shape[:2] == (14 * side, 14 * side)
    cells = raw.reshape(14, side, 14, side, 3)
    assert (cells.max(axis=(1, 3)) == cells.min(axis=(1, 3))).all()  # 14x14 cells, each one colour
    assert len({tuple(c) for c in cells[:, 0, :, 0].reshape(-1, 3)}) > 1

    # score: deletion/insertion of both methods beside the baselines
    data = run("score", *photos, "--method", "gradcam,rollout", "--steps", "4", "--out", str(tmp_path / "sc"))
    assert {r["method"] for r in data["summary"]} == {"gradcam", "rollout", "random", "centre"}
    assert _finite(r["mean"] for r in data["summary"]) and _finite(r["value"] for r in data["images"])
    assert all(r["n"] == 2 for r in data["summary"])

    # sanity: the maps as the model is randomised from the head down through the blocks
    rows = run("sanity", photos[0], "--method", "gradcam", "--out", str(tmp_path / "sa"))
    summary = json.loads((tmp_path / "sa" / "sanity.json").read_text())
    assert summary["stages"][:3] == ["original", "head", "blocks.11"] and "blocks.0" in summary["stages"]
    assert _finite(r["spearman"] for r in rows) and _finite(r["ssim"] for r in rows)
    assert {r["method"] for r in rows} == {"gradcam", "edge"}

    # audit: a small folder of two classes
    for i, (cls, key) in enumerate([("cat", "chelsea"), ("cat", "astronaut"), ("cup", "coffee"), ("cup", "rocket")]):
        (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_photos[key], tmp_path / "data" / cls / f"{i}.png")
    run("audit", str(tmp_path / "data"), "--out", str(tmp_path / "au"))
    audit = json.loads((tmp_path / "au" / "summary.json").read_text())
    assert audit["images"] == 4 and not audit["skipped"]
    assert sum(c["n"] for c in audit["classes"]) == 4
