"""A live module passed to ``load_model`` is left as found (issue 31, item 2): its training mode,
``requires_grad`` flags and memory format are the same after ``load_model`` and after every verb
(explain, score, journey, visualize, audit), while the LensModel shares its weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens as cl

S = 24


def net_in_training() -> nn.Module:
    """A small CNN in ``.train()`` with a dropout and a batch norm, its first conv frozen."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
                        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 2))
    net[0].weight.requires_grad_(False)
    return net.train()


def state(net: nn.Module) -> tuple:
    """What the user would notice: each module's mode, each parameter's flag and memory layout."""
    return (tuple(m.training for m in net.modules()),
            tuple(p.requires_grad for p in net.parameters()),
            tuple((p.is_contiguous(), p.stride()) for p in net.parameters()))


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (S, S, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_load_model_and_every_verb_leave_the_module_as_found(images, tmp_path):
    net = net_in_training()
    before = state(net)
    assert net.training and not net[0].weight.requires_grad and net[0].weight.is_contiguous()
    lm = cl.load_model(net, input_size=(3, S, S), class_names=["a", "b"])
    assert state(net) == before, "load_model changed the module"
    assert not lm.module.training  # convlens works in eval mode on its twin
    files = sorted(str(p) for p in images.rglob("*.png"))

    ex = cl.explain(lm, files[:2], method="gradcam")
    assert state(net) == before, "explain"
    cl.score(lm, files[:2], metric="deletion", steps=4)
    assert state(net) == before, "score"
    cl.journey(lm, files[:1])
    assert state(net) == before, "journey"
    cl.visualize(lm, layer="4", channels=[0], steps=2, size=S)
    assert state(net) == before, "visualize"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cl.audit(lm, images, out=tmp_path / "audit", batch_size=4, top_k=1)
    assert state(net) == before, "audit"
    assert ex.maps.shape[-2:] == (S, S)


def test_the_lens_model_shares_the_weights_it_leaves_alone():
    """Eval-mode answers from the shared weights: a weight changed on the user's module is seen."""
    net = net_in_training()
    lm = cl.load_model(net, input_size=(3, S, S))
    x = torch.randn(2, 3, S, S)
    with torch.no_grad():
        a = lm(x)
        net.eval()
        assert torch.equal(a, net(x))  # the same eval-mode function
        net.train()
        net[-1].bias += 1.0
        assert torch.allclose(lm(x), a + 1.0)
    assert next(lm.module.parameters()) is next(net.parameters())
    assert lm.module.state_dict().keys() == net.state_dict().keys()


def test_channels_last_on_request_works_on_a_copy():
    net = net_in_training()
    lm = cl.load_model(net, input_size=(3, S, S), channels_last=True)
    assert net[0].weight.is_contiguous() and net.training
    assert not lm.module[0].weight.is_contiguous()  # the copy is channels-last
    x = torch.randn(1, 3, S, S)
    with torch.no_grad():
        net.eval()
        assert torch.allclose(lm(x), net(x), atol=1e-5)
