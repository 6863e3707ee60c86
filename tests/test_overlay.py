"""Overlays from every picture form, colour maps and the grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.errors import SpecError
from convlens.models import Preprocess
from convlens.render.overlay import colorize, grid, overlay, to_rgb

HEAT = np.zeros((6, 8), dtype=np.float32)
HEAT[:2, 6:] = 1.0  # hot in the top right corner


def hot_corner(img: Image.Image) -> None:
    a = np.asarray(img).astype(int)
    h, w = a.shape[:2]
    tr = a[: h // 3, 2 * w // 3:].reshape(-1, 3).mean(0)
    bl = a[2 * h // 3:, : w // 3].reshape(-1, 3).mean(0)
    assert tr[0] > bl[0] + 30  # jet: hot is red, cold is blue
    assert bl[2] > tr[2]


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGB", (80, 60), (120, 120, 120)),
    lambda: np.full((60, 80, 3), 120, np.uint8),
    lambda: np.full((60, 80, 3), 0.47, np.float32),
    lambda: np.full((60, 80), 120, np.uint8),  # grayscale
    lambda: Image.new("L", (80, 60), 120),
    lambda: torch.full((3, 60, 80), 0.47),
])
def test_overlay_from_any_picture(make):
    out = overlay(make(), HEAT, cmap="jet", alpha=0.5)
    assert out.size == (80, 60) and out.mode == "RGB"
    hot_corner(out)


def test_overlay_normalised_tensor_uses_preprocess():
    pre = Preprocess((3, 60, 80), mean=(0.5,) * 3, std=(0.5,) * 3)
    x = pre.normalize(torch.full((1, 3, 60, 80), 0.8))  # 0.6 normalised
    plain = to_rgb(x[0], pre)
    assert abs(np.asarray(plain).mean() - 0.8 * 255) < 2
    assert overlay(x, HEAT, preprocess=pre).size == (80, 60)


def test_alpha_and_colormaps():
    base = Image.new("RGB", (8, 6), (10, 200, 30))
    assert np.array_equal(np.asarray(overlay(base, HEAT, alpha=0.0)), np.asarray(base))
    assert np.array_equal(np.asarray(overlay(base, HEAT, alpha=1.0)), np.asarray(colorize(HEAT, cmap="jet")))
    for cmap in ("jet", "turbo", "inferno", "viridis"):
        c = np.asarray(colorize(HEAT, cmap=cmap)).astype(int)
        assert c.shape == (6, 8, 3) and not np.array_equal(c[0, 7], c[5, 0])
    inferno = np.asarray(colorize(HEAT, cmap="inferno")).astype(int)
    assert inferno[0, 0].sum() < 30 and inferno[0, 7].sum() > 500  # black to pale yellow
    with pytest.raises(SpecError, match="unknown colour map 'jett'.*jet"):
        colorize(HEAT, cmap="jett")
    with pytest.raises(SpecError, match="alpha"):
        overlay(base, HEAT, alpha=1.5)


def test_unnormalised_heatmap_is_scaled():
    out = np.asarray(colorize(HEAT * 7 - 3, cmap="gray"))
    assert out.min() == 0 and out.max() == 255


def test_grid_layout():
    cells = [[Image.new("RGB", (50, 40), c) for c in ("red", "blue")] for _ in range(3)]
    g = grid(cells, row_titles=["a", "b", "c"], col_titles=["x", "y"], title="t", cell=64)
    assert g.width > 2 * 64 and g.height > 3 * 64
    with pytest.raises(SpecError):
        grid([])


def test_one_colour_map_registry():
    from convlens.render import colors

    assert colors.check_cmap("magma") == "magma"
    with pytest.raises(SpecError) as info:
        colors.check_cmap("viridiss")
    assert info.value.param == "cmap" and "viridis" in str(info.value) and "--" not in str(info.value)
    # one colorize: fixed scale, or [0, 1] as it is, or min-max when outside it
    v = np.array([[0.0, 0.5, 1.0]])
    assert np.array_equal(colorize(v, cmap="gray"), colorize(v, 0.0, 1.0, "gray"))
    assert np.array_equal(colorize(v * 4 - 2, cmap="gray"), colorize(v, 0.0, 1.0, "gray"))
    assert colorize(torch.tensor([2.0]), 0.0, 4.0, "gray")[0].tolist() == [128, 128, 128]


def test_grid_enlarges_small_pictures_crisply_and_keeps_large_ones_inside_the_cell():
    small = Image.fromarray(np.eye(4, dtype=np.uint8) * 255).convert("RGB")
    big = Image.new("RGB", (300, 150), "red")
    g = grid([[small, big]], cell=64, pad=0)
    a = np.asarray(g)
    assert a.shape == (64, 128, 3)
    assert set(np.unique(a[:, :64])) <= {0, 255}  # nearest: no blurred grey
    assert (a[16:48, 64:] == [255, 0, 0]).all()  # 300x150 fitted to 64x32, centred
