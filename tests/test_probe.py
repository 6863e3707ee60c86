"""Probe: captures named layers, always removes its hooks, and names unknown layers clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import LayerError
from convlens.probe import Probe, StopForward, first_tensor, resolve_modules


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def resnet():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _manual(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference: clone each output right when it is produced."""
    mods = dict(model.named_modules())
    got: dict[str, torch.Tensor] = {}
    hs = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, o.detach().clone())) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    return got


def test_captures_named_layers(resnet, x):
    names = ["conv1", "layer1", "layer3.1.conv2", "avgpool", "fc"]
    want = _manual(resnet, names, x)
    before = _hook_count(resnet)
    with Probe(resnet, names) as probe, torch.no_grad():
        assert _hook_count(resnet) == before + len(names) + 1  # one pre-hook on the model reads the input size
        logits = resnet(x)
    assert _hook_count(resnet) == before
    assert probe.layers == names and set(probe.activations) == set(names)
    assert probe.activations["conv1"].shape == (2, 64, 32, 32)
    assert probe.activations["layer3.1.conv2"].shape == (2, 256, 4, 4)
    for n in names:
        assert torch.equal(probe.activations[n], want[n]), n
    assert torch.equal(probe.activations["fc"], logits)


def test_clone_keeps_the_value_before_an_inplace_change(resnet, x):
    name = "layer1.0.bn2"  # then `out += identity` modifies it in place
    want = _manual(resnet, [name], x)[name]
    with Probe(resnet, [name]) as plain, torch.no_grad():
        resnet(x)
    assert not torch.allclose(plain.activations[name], want)  # by reference: it sees the later change
    with Probe(resnet, [name], clone=[name]) as cloned, torch.no_grad():
        resnet(x)
    assert torch.equal(cloned.activations[name], want)


def test_hooks_removed_when_the_forward_raises(resnet):
    before = _hook_count(resnet)
    bad = torch.zeros(1, 5, 64, 64)  # wrong number of channels: conv1 raises
    with pytest.raises(RuntimeError):
        with Probe(resnet, ["conv1", "layer1", "fc"], gradients=True):
            resnet(bad)
    assert _hook_count(resnet) == before

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with Probe(resnet, ["layer2"]):
            raise Boom()
    assert _hook_count(resnet) == before


def test_unknown_layer_error_names_closest(resnet):
    before = _hook_count(resnet)
    with pytest.raises(LayerError, match=r"unknown layer 'layer5'.*did you mean: .*layer[1-4]") as info:
        with Probe(resnet, ["conv1", "layer5"]):
            pass
    assert "\n" not in str(info.value) and "convlens layers" in str(info.value)
    assert _hook_count(resnet) == before
    with pytest.raises(LayerError, match="bn_1"):
        resolve_modules(resnet, ["bn_1"])
    with pytest.raises(LayerError):
        resolve_modules(resnet, [""])  # the root has no name to ask for


def test_gradients_and_transform(resnet, x):
    names = ["layer4", "layer2.0.conv1"]
    with Probe(resnet, names, gradients=True, detach=False,
               transform=lambda n, t: t[:, :3]) as probe:
        out = resnet(x.clone().requires_grad_(True))
        out[:, 7].sum().backward()
    resnet.zero_grad(set_to_none=True)
    assert probe.activations["layer4"].shape == (2, 3, 2, 2)  # the transform kept 3 channels
    assert probe.gradients["layer4"].shape == (2, 512, 2, 2)
    # the gradient into layer4's output through avgpool + fc is fc.weight[7] / (h*w) everywhere
    expected = (resnet.fc.weight[7] / 4).view(1, 512, 1, 1).expand(2, 512, 2, 2)
    assert torch.allclose(probe.gradients["layer4"], expected, atol=1e-6)
    assert probe.gradients["layer2.0.conv1"].abs().sum() > 0
    probe.clear()
    assert not probe.activations and not probe.gradients


def test_stop_records_the_layer_and_computes_nothing_after_it(resnet, x):
    calls = []
    h = resnet.fc.register_forward_pre_hook(lambda *_: calls.append(1))  # the reference: not a convlens hook
    try:
        with Probe(resnet, ["layer2"], stop=True) as probe, torch.no_grad():
            assert probe.run(x) is None
    finally:
        h.remove()
    assert not calls and probe.activations["layer2"].shape == (2, 128, 8, 8)
    assert _hook_count(resnet) == 0
    with pytest.raises(LayerError, match="not used by the model's forward pass"):
        Probe(_Unused(), ["b"], stop=True).run(torch.zeros(1, 2))


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.a(x)


def test_graph_starts_at_the_first_probed_layer(resnet, x):
    with Probe(resnet, ["layer3"], gradients=True, graph=True) as probe:
        logits = probe.run(x)
    leaf = probe.activations["layer3"]
    assert leaf.requires_grad and leaf.is_leaf and logits.requires_grad
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    (g,) = torch.autograd.grad(logits[:, 0].sum(), [leaf])
    assert g.shape == leaf.shape and all(p.grad is None for p in resnet.parameters())
    assert _hook_count(resnet) == 0


def test_replace_and_order(resnet, x):
    zeros = torch.zeros(2, 512, 2, 2)
    with Probe(resnet, ["layer4"], replace=lambda _n, _o: zeros) as probe, torch.no_grad():
        out = probe.run(x)
    assert torch.allclose(out, resnet.fc.bias.expand(2, -1), atol=1e-6)  # the head saw the zeros
    with Probe(resnet, None, keep="first", order=True) as every, torch.no_grad():
        resnet(x[:1])
    names = [n for n, _ in every.order]
    assert names[-1] == "fc" and names.index("layer1") < names.index("layer2")
    assert every.entered[0] == "conv1" and "layer1.0.bn2" in every.mutated()  # `out += identity`
    assert first_tensor(({"a": 1}, [torch.ones(1)])) is not None and issubclass(StopForward, Exception)
    assert _hook_count(resnet) == 0
