"""Attention rollout and Chefer et al.'s gradient-weighted attention for timm ViT / DeiT.

A random-init ViT-Tiny (and a distilled DeiT-Tiny: two prefix tokens): rollout equals a hand
computation from the attention computed from ``qkv``; Chefer's relevance equals a reference
written here from the paper's equations on a forward written by hand; the model keeps its fused
attention setting and no hook.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens.errors import ConvlensError
from convlens.lens.cam import explain
from convlens.models import wrap_module

timm = pytest.importorskip("timm")


def _vit(name):
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, img_size=96).eval()
    return wrap_module(net, input_size=(3, 96, 96))


def _scale(grid_map, size):
    """The maps' scaling as the CAMs': ReLU, min-max, bilinear upsampling, min-max."""
    m = grid_map.clamp(min=0)
    m = (m - m.amin((-2, -1), keepdim=True)) / (m.amax((-2, -1), keepdim=True) - m.amin((-2, -1), keepdim=True) + 1e-7)
    up = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return (up - up.amin((-2, -1), keepdim=True)) / (up.amax((-2, -1), keepdim=True) - up.amin((-2, -1), keepdim=True)
                                                     + 1e-7)


def _manual(net, x):
    """A ViT forward written out, attention computed from qkv: (logits, [attention per block])."""
    atts = []
    h = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x))))
    for blk in net.blocks:
        y = blk.norm1(h)
        at = blk.attn
        B, N, C = y.shape
        q, k, v = at.qkv(y).reshape(B, N, 3, at.num_heads, at.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = at.q_norm(q), at.k_norm(k)
        a = ((q * at.scale) @ k.transpose(-2, -1)).softmax(-1)
        if a.requires_grad:
            a.retain_grad()
        atts.append(a)
        o = at.proj(at.norm((a @ v).transpose(1, 2).reshape(B, N, C)))
        h = h + blk.ls1(o)
        h = h + blk.ls2(blk.mlp(blk.norm2(h)))
    return net.forward_head(net.norm(h)), atts


@pytest.mark.parametrize("name, prefix", [("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_rollout_equals_a_hand_computation(name, prefix):
    lm = _vit(name)
    net = lm.module
    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits, atts = _manual(net, x)
        assert torch.allclose(logits, net(x), atol=1e-4)  # the hand forward is the model's
    ex = explain(lm, x, method="rollout", target=[3, 7])
    # by hand, in float64: mean over heads, + identity, halved, rows renormalised, multiplied in order
    R = None
    for a in atts:
        m = a.double().mean(1)
        m = 0.5 * m + 0.5 * torch.eye(m.shape[-1], dtype=torch.float64)
        m = m / m.sum(-1, keepdim=True)
        R = m if R is None else m @ R
    want = _scale(R[:, 0, prefix:].reshape(2, 6, 6).float(), (96, 96))
    assert ex.heatmaps.shape == (2, 2, 96, 96)
    assert torch.allclose(ex.heatmaps[:, 0], want, atol=1e-4)
    assert torch.equal(ex.heatmaps[:, 0], ex.heatmaps[:, 1])  # rollout is class-independent
    assert ex.layer == "attention"
    assert all(getattr(m, "fused_attn", True) for m in net.modules() if hasattr(m, "fused_attn"))
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == 0


@pytest.mark.parametrize("name, prefix", [("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_chefer_agrees_with_a_reference_from_the_equations(name, prefix):
    lm = _vit(name)
    net = lm.module
    torch.manual_seed(2)
    x = torch.randn(2, 3, 96, 96)
    classes = [5, 11]
    ex = explain(lm, x, method="chefer,rollout", target=classes)
    for t, k in enumerate(classes):
        net.zero_grad()
        logits, atts = _manual(net, x)
        logits[:, k].sum().backward()
        n = atts[0].shape[-1]
        R = torch.eye(n, dtype=torch.float64).expand(2, n, n).clone()
        for a in atts:  # Chefer et al. 2021, eq. 5-6: R += E_h[(grad * A)^+] R
            cam = (a.grad.double() * a.detach().double()).clamp(min=0).mean(1)
            R = R + cam @ R
        want = _scale(R[:, 0, prefix:].reshape(2, 6, 6).float(), (96, 96))
        got = ex["chefer"].heatmaps[:, t]
        for i in range(2):
            r = float(np.corrcoef(got[i].flatten().numpy(), want[i].flatten().numpy())[0, 1])
            assert r >= 0.999, f"{name} class {k} image {i}: r = {r:.5f}"
        assert torch.allclose(got, want, atol=1e-3)
    assert not torch.allclose(ex["chefer"].heatmaps[:, 0], ex["chefer"].heatmaps[:, 1], atol=1e-3)  # per class


def test_attention_maps_are_refused_on_a_cnn_in_one_line():
    import torchvision

    lm = wrap_module(torchvision.models.resnet18().eval(), input_size=(3, 64, 64))
    with pytest.raises(ConvlensError, match="no attention layers convlens can read"):
        explain(lm, torch.randn(1, 3, 64, 64), method="rollout")


def test_attention_maps_are_scored_like_any_method():
    import convlens as cl

    lm = _vit("vit_tiny_patch16_224")
    torch.manual_seed(3)
    s = cl.score(lm, torch.randn(2, 3, 96, 96), method="rollout,chefer", metric="deletion")
    d = s.to_dict()
    assert "rollout" in str(d) and "chefer" in str(d)
