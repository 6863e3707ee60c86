"""Filter grids: first-layer composites matched to the kernels lab, slices deeper down."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.errors import LayerError
from convlens.lens.filters import filters, nearest_kernels
from convlens.models import wrap_module


def _small_net(cin: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(cin, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def test_planted_kernels_are_recognised_with_sign():
    from convlens.kernels import KERNELS

    net = _small_net(3)
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 1] = torch.tensor(KERNELS["sobel-x"], dtype=torch.float32)
        net[0].weight[1, :] = -torch.tensor(KERNELS["horizontal-edge"], dtype=torch.float32) / 3
        net[0].weight[2, 0] = torch.tensor(KERNELS["laplacian"], dtype=torch.float32) * 0.1 + 0.01 * torch.randn(3, 3)
    grid = filters(wrap_module(net, input_size=(3, 32, 32)))
    assert grid.layer == "0" and grid.first_layer
    m = grid.matches
    assert (m[0].kernel, round(m[0].score, 3)) == ("sobel-x", 1.0)
    assert m[1].kernel == "horizontal-edge" and m[1].score == pytest.approx(-1.0, abs=1e-5)
    assert m[2].kernel == "laplacian" and m[2].score > 0.9
    assert m[0].label == "Sobel x, 1.00"


def test_kernels_are_resized_to_larger_filters():
    w = torch.zeros(1, 1, 5, 5)
    w[0, 0, :, 0], w[0, 0, :, 4] = 1.0, -1.0  # a 5x5 light-to-dark vertical edge
    match = nearest_kernels(w)[0]
    assert match.kernel == "vertical-edge" and match.score > 0.8


def test_builtin_stem_and_deeper_layers(builtin_model, tmp_path):
    stem = filters(builtin_model)  # default: the first conv layer
    assert stem.layer == "conv_stem" and stem.first_layer and len(stem.matches) == 32
    assert stem.scale == pytest.approx(float(builtin_model.get_layer("conv_stem").weight.detach().abs().max()))
    saved = stem.save(tmp_path)
    png = saved.first("figure")
    assert png == tmp_path / "filters_conv_stem.png" and saved.first("json").is_file()
    img = np.asarray(Image.open(png))
    assert img.shape[0] > 300 and img.std() > 10  # a real picture, not a blank canvas

    deep = filters(builtin_model, "blocks.2.0.conv_pwl", max_filters=8)
    assert not deep.first_layer and deep.matches == [] and deep.shown == list(range(8))
    assert deep.to_dict()["kind"] == "slices" and deep.to_dict()["weight_shape"] == [40, 144, 1, 1]
    assert deep._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_channel_model_and_bad_layers():
    lm = wrap_module(_small_net(1), input_size=(1, 60, 64), mean=(0.0,), std=(1 / 255,))
    grid = filters(lm)
    assert grid.first_layer and grid.shape == (4, 1, 3, 3) and len(grid.matches) == 4
    assert not filters(lm, "2").first_layer
    with pytest.raises(LayerError, match="not a convolution"):
        filters(lm, "1")
    with pytest.raises(LayerError, match="unknown layer"):
        filters(lm, "conv9")
