"""Activation maximization: batched objectives, parameterizations, any model's input config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.errors import ConvlensError, LayerError, SpecError, TargetError
from convlens.lens.featurevis import Transforms, activation_of, random_affine, total_variation, visualize
from convlens.models import wrap_module


@pytest.fixture(scope="module")
def run_like():
    """A small 1-channel CNN on raw 64x60 pixels, configured like a trained run."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 20))
    return wrap_module(net, input_size=(1, 60, 64), mean=(0.0,), std=(1 / 255,))


def _channel_means(lm, layer, pixels):
    with torch.no_grad():
        out = {}
        h = lm.get_layer(layer).register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
        try:
            lm.module(lm.config.normalize(pixels))
        finally:
            h.remove()
    return out["a"].mean((-2, -1))


def test_trained_run_visualizes_with_no_extra_arguments(run_like, tmp_path):
    res = visualize(run_like, steps=60, lr=0.1)  # no layer, channel, size or normalisation given
    assert res.layer == "3" and res.targets == list(range(8))  # last conv layer, first 8 channels
    assert tuple(res.images.shape) == (8, 1, 60, 64)
    # each image drives its channel beyond what random-noise images and mid-grey do
    rand = torch.rand(32, 1, 60, 64, generator=torch.Generator().manual_seed(1))
    grey = torch.full((1, 1, 60, 64), 0.5)
    base = _channel_means(run_like, "3", torch.cat([rand, grey]))[:, :8].max(0).values
    assert (res.activations > base).all() and (res.activations - base).mean() > 5, (res.activations, base)
    # the saved PNG is what the model sees: 8-bit grey at the model's size, and reproduces the activation
    saved = res.save(tmp_path)
    files = saved["image"]
    img = Image.open(files[3])
    assert img.mode == "L" and img.size == (64, 60)
    pix = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255)[None] for f in files])
    again = activation_of(run_like, "3", pix, res.targets)
    torch.testing.assert_close(again, res.activations, rtol=1e-4, atol=1e-4)
    entry = saved.records[3]
    assert entry["layer"] == "3" and entry["channel"] == 3 and entry["image"] == str(files[3])
    assert res.to_list()[3]["image"] is None and res.to_list(files)[3] == entry
    assert (tmp_path / "grid_3.png").exists() and (tmp_path / "featurevis.json").exists()
    assert res._repr_png_()[:4] == b"\x89PNG"


def test_each_batch_item_maximizes_its_own_channel(run_like):
    res = visualize(run_like, "3", "0-5", steps=40, param="pixel")
    acts = _channel_means(run_like, "3", res.images)[:, :6]  # image i x channel j
    diag = acts.diagonal()
    off = acts.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf")).max(0).values
    assert (diag > off).all(), acts  # image i excites channel i more than any other image does


def test_deterministic_for_a_seed(run_like):
    a = visualize(run_like, "0", [1, 2], steps=8, seed=3)
    b = visualize(run_like, "0", [1, 2], steps=8, seed=3)
    c = visualize(run_like, "0", [1, 2], steps=8, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.activations, b.activations)
    assert not torch.equal(a.images, c.images)


def test_negative_neuron_and_class_objectives(run_like):
    pos = visualize(run_like, "3", "0-3", steps=30)
    neg = visualize(run_like, "3", "0-3", steps=30, negative=True)
    assert (neg.activations < pos.activations - 1).all()
    assert neg.to_list()[0]["channel"] == 0 and neg.file_stem(0).startswith("3_neg_")

    neu = visualize(run_like, "3", "0-3", objective="neuron", steps=30, transforms=False)
    assert neu.neuron == (13, 14)  # the centre of the 26x29 map
    rand = torch.rand(16, 1, 60, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = {}
        h = run_like.get_layer("3").register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
        run_like.module(run_like.config.normalize(rand))
        h.remove()
    best_random = out["a"][:, :4, 13, 14].max(0).values
    assert (neu.activations > best_random).all()

    cls = visualize(run_like, objective="class", classes="3,7", steps=30, lr=0.1)
    with torch.no_grad():
        grey = run_like.module(torch.full((1, 1, 60, 64), 127.5))[0, [3, 7]]
    assert (cls.activations > grey + 1).all() and cls.to_list()[1]["class"] == 7


def test_total_variation_smooths_and_transforms_keep_grey_outside():
    lm_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    torch.manual_seed(0)
    lm = wrap_module(lm_net, input_size=(3, 48, 48))
    rough = visualize(lm, "0", [0], steps=30, param="pixel", lr=0.1, transforms=False)
    smooth = visualize(lm, "0", [0], steps=30, param="pixel", lr=0.1, transforms=False, tv=50.0)
    assert total_variation(smooth.images) < 0.5 * total_variation(rough.images)
    # a pure zoom-out shows the grey padding at the border and the image in the middle
    x = torch.ones(1, 3, 48, 48)
    y = random_affine(x, Transforms(pad=40, jitter=0, scale=(1, 1), rotate=0), torch.Generator().manual_seed(0))
    assert y[0, :, 0, 0].allclose(torch.full((3,), 0.5)) and y[0, :, 24, 24].allclose(torch.ones(3))


def test_hooks_removed_even_when_the_forward_fails():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.armed = False

        def forward(self, x):
            if self.armed:
                raise RuntimeError("boom")
            return x

    net = nn.Sequential(Boom(), nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    lm = wrap_module(net, input_size=(1, 16, 16), class_names=["a", "b"])
    lm.layers()  # built while the module still works
    lm.module[0].armed = True  # now every forward fails before reaching the hooked conv (convlens runs a twin of net)
    with pytest.raises(RuntimeError, match="boom"):
        visualize(lm, "1", [0], steps=1)
    for m in (net, lm.module):
        assert not m[1]._forward_hooks and not any(x._forward_hooks for x in m.modules())


@pytest.mark.parametrize("kwargs, err, text", [
    (dict(layer="3", steps=0), SpecError, "steps must be a positive"),
    (dict(layer="3", steps=-5), SpecError, "steps must be a positive"),
    (dict(layer="3", channels="16"), SpecError, "out of range"),
    (dict(layer="conv9"), LayerError, "unknown layer"),
    (dict(layer="3", objective="pattern"), SpecError, "objective 'pattern'"),
    (dict(layer="3", param="dct"), SpecError, "param 'dct'"),
    (dict(layer="3", size="big"), SpecError, "size 'big'"),
    (dict(layer="7", objective="neuron"), LayerError, "no spatial map"),
    (dict(objective="class", classes="20"), TargetError, "out of range"),
    (dict(objective="class"), SpecError, "classes: give"),
])
def test_bad_input_is_one_clear_error(run_like, kwargs, err, text):
    with pytest.raises(err, match=text) as info:
        visualize(run_like, **kwargs)
    assert isinstance(info.value, ConvlensError) and "\n" not in str(info.value)
    assert "--" not in str(info.value)  # the library names its parameters, the CLI its flags


def test_builtin_class_objective_lands_in_top5(builtin_model):
    classes = [1, 207, 948]  # goldfish, golden retriever, Granny Smith
    res = visualize(builtin_model, objective="class", classes=classes, steps=16)
    with torch.no_grad():
        top5 = builtin_model.module(builtin_model.config.normalize(res.images)).topk(5).indices
    for cls, row in zip(classes, top5.tolist()):
        assert cls in row, (cls, row)
    assert res.labels[0].startswith("goldfish")
