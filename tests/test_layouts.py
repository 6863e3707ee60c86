"""Layouts (issue 28, items 1 and 2): the Probe reads every layer's output as a grid (N, C, H, W) —
channels-first, channels-last or patch tokens with their prefix tokens dropped — maps gradients the
same way, refuses what it cannot read, and sees an in-place ReLU that follows a layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convlens as cl
from convlens.errors import LayerError
from convlens.lens.cam.layers import default_layer
from convlens.probe import Layout, Probe, classify, token_info


class TinyViT(nn.Module):
    """A ViT a user writes by hand: a patchifying conv, a class token and two register tokens, no
    timm attributes; the head reads the class token."""

    def __init__(self, dim: int = 16, patch: int = 4, classes: int = 3):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.reg_token = nn.Parameter(torch.randn(1, 2, dim))
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        n = x.shape[0]
        t = torch.cat([self.cls_token.expand(n, -1, -1), self.reg_token.expand(n, -1, -1), t], dim=1)
        return self.head(self.norm(self.blocks(t))[:, 0])


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ChannelsLastNet(nn.Module):
    """A conv stem, then a channels-last stage (LayerNorm and an MLP over C), ConvNeXt-style, on a
    non-square input so that no axis can be mistaken for another."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 4, stride=4)
        self.norm = nn.LayerNorm(12)
        self.mlp = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 12))
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        t = self.stem(x).permute(0, 2, 3, 1)
        t = t + self.mlp(self.norm(t))
        return self.head(t.mean(dim=(1, 2)))


def test_classify_reads_each_layout_and_refuses_the_rest():
    info = token_info(TinyViT())
    assert info.prefix == 3 and info.patch == (4, 4)
    lin, ln = nn.Linear(4, 4), nn.LayerNorm(4)
    size = (32, 48)
    assert classify(nn.Conv2d(1, 1, 1), torch.zeros(2, 5, 8, 12), 2, size, info).kind == "nchw"
    assert classify(ln, torch.zeros(2, 8, 12, 5), 2, size, info).kind == "nhwc"
    assert classify(nn.GELU(), torch.zeros(2, 8, 12, 5), 2, size, info).kind == "nhwc"  # by the grid's aspect
    tokens = classify(lin, torch.zeros(2, 3 + 8 * 12, 16), 2, size, info)
    assert tokens == Layout("tokens", 3, (8, 12))
    # heads x tokens x dim, a batch folded with patches, a flat vector: refused with a reason
    for out, batch in [(torch.zeros(2, 2, 99, 8), 2), (torch.zeros(8, 24, 16), 2), (torch.zeros(2, 16), 2)]:
        why = classify(nn.Identity(), out, batch, size, info)
        assert isinstance(why, str) and why


def test_probe_hands_grids_and_maps_gradients_the_same_way():
    torch.manual_seed(0)
    net = TinyViT().eval()
    x = torch.randn(2, 3, 32, 48)
    with Probe(net, ["blocks.1.norm1"], gradients=True, detach=False) as probe:
        out = net(x)
        out[:, 1].sum().backward()
    grid, grad = probe.activations["blocks.1.norm1"], probe.gradients["blocks.1.norm1"]
    assert grid.shape == grad.shape == (2, 16, 8, 12)
    # the reference: the raw tokens, prefix dropped, patch (i, j) at row i, column j
    raw = {}
    h = net.blocks[1].norm1.register_forward_hook(lambda _m, _i, o: raw.setdefault("t", o))
    try:
        net(x)
    finally:
        h.remove()
    t = raw["t"].detach()
    assert torch.equal(grid.detach()[:, :, 2, 5], t[:, 3 + 2 * 12 + 5])


def test_user_built_vit_explains_at_its_last_block_with_a_grid():
    torch.manual_seed(0)
    lm = cl.load_model(TinyViT(), input_size=(3, 32, 48))
    assert default_layer(lm) == "blocks.1.norm1"
    assert lm.layers()["blocks.1.norm1"].output_shape == (16, 8, 12)
    ex = cl.explain(lm, torch.randn(2, 3, 32, 48), method="gradcam,scorecam,ablationcam", channels=4)
    assert ex.maps.shape == (3, 2, 1, 32, 48) and torch.isfinite(ex.maps).all()


def test_channels_last_stage_is_permuted_not_misread():
    torch.manual_seed(0)
    net = ChannelsLastNet().eval()
    lm = cl.load_model(net, input_size=(3, 32, 48))
    table = lm.layers()
    assert table["norm"].layout == "nhwc" and table["norm"].output_shape == (12, 8, 12)
    assert table["norm"].raw_shape == (8, 12, 12) and "(None, 8, 12, 12)" in str(table)
    assert table["mlp.1"].layout == "nhwc" and table["mlp.1"].output_shape == (24, 8, 12)
    x = torch.randn(1, 3, 32, 48)
    ex = cl.explain(lm, x, method="gradcam", layer="norm")
    # by hand: Grad-CAM on the channels-last activation, channels moved first
    acts = {}
    h = net.norm.register_forward_hook(lambda _m, _i, o: acts.setdefault("a", o))
    try:
        out = net(x)
        target = int(out[0].argmax())
        (g,) = torch.autograd.grad(out[0, target], acts["a"])
    finally:
        h.remove()
    a, g = acts["a"].detach().permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))[0]
    ours = torch.nn.functional.interpolate(ex.maps[0, :, :1], size=(8, 12), mode="area")[0, 0]
    assert torch.corrcoef(torch.stack([ours.flatten(), cam.flatten()]))[0, 1] > 0.95


def test_a_layer_that_is_no_grid_is_refused_naming_one_that_works():
    lm = cl.load_model(TinyViT(), input_size=(3, 32, 48))
    with pytest.raises(LayerError, match=r"layer 'head' .*try 'blocks\.1\.norm1'") as err:
        cl.explain(lm, torch.randn(1, 3, 32, 48), layer="head")
    assert "\n" not in str(err.value)


class InplaceReluNet(nn.Module):
    """DenseNet's ending: a batch norm, then ``F.relu(inplace=True)`` outside any module."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        f = torch.nn.functional.relu(self.features(x), inplace=True)
        return self.fc(f.mean(dim=(2, 3)))


def test_the_activation_captured_is_the_one_after_an_in_place_relu():
    torch.manual_seed(0)
    net = InplaceReluNet().eval()
    nn.init.normal_(net.features[1].bias, std=1.0)  # plenty of negative pre-activations
    lm = cl.load_model(net, input_size=(3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    from convlens.lens.cam.capture import cam_forward, target_gradients

    logits, acts = cam_forward(lm.module, x, ["features.1"], gradients=True)
    a = acts["features.1"]
    assert float(a.detach().min()) >= 0  # the values the next layer sees, not the pre-ReLU copy
    with torch.no_grad():
        assert torch.allclose(a, torch.relu(net.features(x)), atol=1e-6)
    grads = target_gradients(logits, acts, torch.tensor([[0], [1]]))["features.1"]
    assert grads.shape == (2, 1, 8, 16, 16) and bool((grads[:, 0][a == 0] == 0).all())  # through the ReLU


def test_journey_shows_the_maps_after_an_in_place_relu():
    torch.manual_seed(0)
    net = InplaceReluNet().eval()
    nn.init.normal_(net.features[1].bias, std=1.0)
    lm = cl.load_model(net, input_size=(3, 16, 16))
    x = torch.randn(1, 3, 16, 16)
    j = cl.journey(lm, x, layers=["features", "features.0"])
    with torch.no_grad():
        assert torch.allclose(j.maps["features"], torch.relu(net.features(x)), atol=1e-6)
        assert torch.allclose(j.maps["features.0"], net.features[0](x), atol=1e-6)  # untouched: as it is


def test_journey_of_a_transformer_walks_its_blocks_on_the_patch_grid():
    torch.manual_seed(0)
    lm = cl.load_model(TinyViT(), input_size=(3, 32, 48))
    assert lm.stage_layers() == ["blocks.0", "blocks.1"]  # not just the patch embedding
    j = cl.journey(lm, torch.randn(1, 3, 32, 48))
    assert {n: tuple(m.shape) for n, m in j.maps.items()} == {"blocks.0": (1, 16, 8, 12), "blocks.1": (1, 16, 8, 12)}
