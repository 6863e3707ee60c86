"""Preprocess: the transform, normalisation, crop_box geometry, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.models import Preprocess


def _marker_image(w: int, h: int, cx: int, cy: int, r: int = 4) -> Image.Image:
    arr = np.full((h, w, 3), 255, dtype=np.uint8)
    arr[cy - r:cy + r, cx - r:cx + r] = 0  # a dark square centred on (cx, cy) (pixel corners)
    return Image.fromarray(arr)


def _find_marker(x: torch.Tensor) -> tuple[float, float]:
    """Centre of the dark marker in a (C, H, W) tensor, in input-grid coordinates (pixel corners)."""
    dark = (x.mean(0) < x.mean(0).max() - 0.5 * (x.mean(0).max() - x.mean(0).min())).float()
    ys, xs = torch.nonzero(dark, as_tuple=True)
    assert len(xs) > 0, "marker not found in the model's input"
    return float(xs.float().mean()) + 0.5, float(ys.float().mean()) + 0.5


CONFIGS = [
    Preprocess((3, 224, 224), (0.5,) * 3, (0.5,) * 3, interpolation="bicubic", crop_pct=0.875),  # built-in
    Preprocess((3, 224, 224), interpolation="bilinear", crop_pct=224 / 256),                    # torchvision
    Preprocess((3, 64, 64), (0.5,), (0.5,), crop_pct=1.0),
    Preprocess((3, 96, 128), crop_pct=0.9),                                                      # non-square input
    Preprocess((3, 112, 112), crop_pct=0.95, crop_mode="squash"),                              # squash: aspect not kept
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.height}x{c.width}@{c.crop_pct:.3f}")
@pytest.mark.parametrize("size,marker", [
    ((300, 200), (150, 100)), ((300, 200), (120, 70)), ((300, 200), (190, 140)),   # wide photo
    ((180, 320), (60, 130)), ((180, 320), (100, 200)),                           # tall photo
    ((256, 256), (100, 150)),                                                   # square photo
])
def test_crop_box_maps_input_grid_back_onto_the_image(cfg, size, marker):
    w, h = size
    x0, y0, x1, y1 = cfg.crop_box(w, h)
    assert 0 <= x0 < x1 <= w + 1e-6 and 0 <= y0 < y1 <= h + 1e-6
    mx, my = marker
    if not (x0 + 6 < mx < x1 - 6 and y0 + 6 < my < y1 - 6):
        pytest.skip("marker falls outside this centre crop")  # (covered by other cases)
    x = cfg.transform(_marker_image(w, h, mx, my))
    assert x.shape == (3, cfg.height, cfg.width)
    tx, ty = _find_marker(x)
    ox = x0 + tx * (x1 - x0) / cfg.width
    oy = y0 + ty * (y1 - y0) / cfg.height
    assert abs(ox - mx) <= 1.5 and abs(oy - my) <= 1.5, ((ox, oy), marker, (x0, y0, x1, y1))


def test_crop_box_full_image_without_crop():
    cfg = Preprocess((3, 64, 64), crop_pct=1.0)
    # shorter side resized to 64, centre crop of 64: a square image is used whole
    assert cfg.crop_box(128, 128) == pytest.approx((0, 0, 128, 128))
    x0, y0, x1, y1 = cfg.crop_box(200, 100)  # wide: the middle 100x100
    assert (x0, y0, x1, y1) == pytest.approx((50, 0, 150, 100), abs=1.6)


def test_normalize_denormalize_round_trip():
    cfg = Preprocess((3, 8, 8), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = torch.rand(2, 3, 8, 8)
    n = cfg.normalize(x)
    assert torch.allclose(n[:, 1], (x[:, 1] - 0.456) / 0.224, atol=1e-6)
    assert torch.allclose(cfg.denormalize(n), x, atol=1e-6)
    white = cfg.transform(Image.new("RGB", (20, 10), "white"))
    assert torch.allclose(cfg.denormalize(white[None])[0], torch.ones(3, 8, 8), atol=1e-3)


def test_single_channel_mean_std_broadcast_and_mode():
    gray = Preprocess((1, 28, 28), (0.1307,), (0.3081,), crop_pct=1.0)
    assert gray.image_mode == "L" and gray.mean == (0.1307,)
    assert gray.transform(Image.new("L", (28, 28), 0)).shape == (1, 28, 28)
    rgb = Preprocess((3, 28, 28), (0.5,), (0.2,))
    assert rgb.mean == (0.5, 0.5, 0.5) and rgb.std == (0.2, 0.2, 0.2) and rgb.image_mode == "RGB"


def test_to_dict_from_dict_round_trip():
    for cfg in CONFIGS + [Preprocess((1, 28, 28), (0.1307,), (0.3081,), interpolation="bilinear", crop_pct=1.0)]:
        d = cfg.to_dict()
        assert set(d) == {"input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode"}
        back = Preprocess.from_dict(json.loads(json.dumps(d)))  # through JSON, as checkpoints store it
        assert back == cfg and back.input_size == cfg.input_size and isinstance(back.input_size, tuple)
    assert Preprocess.from_dict({"input_size": [3, 32, 32], "unknown": 1}).input_size == (3, 32, 32)


def test_from_timm_builtin(builtin_model):
    cfg = builtin_model.config
    assert cfg.input_size == (3, 224, 224) and cfg.crop_pct == pytest.approx(0.875)
    assert cfg.interpolation == "bicubic" and cfg.mean == (0.5, 0.5, 0.5)
