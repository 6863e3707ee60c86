"""Methods that backpropagate through the whole network: FullGrad and guided backpropagation.

* FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam computes it: ``|x * dS/dx|`` per
  colour plus, for every ``Conv2d`` / ``BatchNorm2d`` with a bias, ``|b * dS/dz|`` (``z`` its
  output, ``b`` its bias; a batch norm's effective bias ``beta - mean * gamma / sqrt(var + eps)``),
  each channel min-max scaled and upsampled to the input, summed, then scaled.  No layer to pick.
* Guided backpropagation (Springenberg et al. 2015): the input gradient with every ``nn.ReLU``
  letting only positive gradients through (pytorch-grad-cam's ``GuidedBackpropReLUModel``; ReLUs
  called as functions, and other activations, backpropagate as usual).  The heatmap is
  ``max over colours of |gradient|``; Guided Grad-CAM multiplies the gradient by the Grad-CAM
  map first.  The ReLUs are guided through forward hooks removed in ``finally``: the module
  itself is never changed.

FullGrad's bias layers are exactly ``nn.Conv2d`` / ``nn.BatchNorm2d``, as in pytorch-grad-cam, and
timm's fused norm + activation ``BatchNormAct2d`` (also the built-in EfficientNet-Lite0's norms), whose
output comes after its activation: its bias gradient is read where the norm's output enters
``drop`` then ``act`` (timm's forward), before the activation.  pytorch-grad-cam skips those
layers (``type(m) in [Conv2d, BatchNorm2d]``) and returns the input-gradient term alone for the
built-in model; convlens agrees with it on the same network with each ``BatchNormAct2d`` unfused
into ``BatchNorm2d`` + activation.  Another subclass of ``BatchNorm2d`` with a bias is refused in
one line (where its bias acts is unknown).  Only ``nn.ReLU`` modules are guided (``ReLU6`` and
functional ReLUs backpropagate as usual), as in pytorch-grad-cam.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
>>> score = lambda out, rows: out[:, :1]
>>> tuple(guided_gradients(net, torch.randn(2, 3, 8, 8), score, 1).shape)
(2, 1, 3, 8, 8)
>>> sum(len(m._forward_hooks) for m in net.modules())
0
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ...errors import LayerError
from ...probe import Probe
from .formulas import Scorer, normalize_maps, upsample


class _PositiveGrad(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Every ``nn.ReLU`` of ``model`` guided while the block runs: its output passes through
    :class:`_PositiveGrad`, so with the ReLU's own mask the gradient into it is
    ``g * (input > 0) * (g > 0)``.  Yields how many ReLUs were guided."""
    handles = []
    try:
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                handles.append(m.register_forward_hook(lambda _m, _i, out: _PositiveGrad.apply(out)))
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def _input_grads(model: nn.Module, x: torch.Tensor, score: Scorer, T: int,
                 after: Callable[[], Any] | None = None) -> tuple[list[torch.Tensor], list[Any]]:
    """One forward with the graph, one backward per target column: the input gradients per column
    and what ``after()`` returns after each backward (e.g. the gradients a probe recorded)."""
    with torch.inference_mode(False), torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        out = model(xi)
        if not isinstance(out, torch.Tensor):
            raise LayerError(f"the model's output is {type(out).__name__}, not a tensor", param="model")
        scores = score(out.float(), None)
        per_x, per_after = [], []
        for t in range(T):
            (g,) = torch.autograd.grad(scores[:, t].sum(), [xi], retain_graph=t < T - 1, allow_unused=True)
            per_x.append(torch.zeros_like(xi) if g is None else g.detach())
            per_after.append(after() if after is not None else None)
    return per_x, per_after


def guided_gradients(model: nn.Module, x: torch.Tensor, score: Scorer, T: int) -> torch.Tensor:
    """Guided-backprop input gradients ``(N, T, C, H, W)`` of each target column."""
    with guided_relus(model):
        per_x, _ = _input_grads(model, x, score, T)
    return torch.stack(per_x, dim=1)


def colour_max(G: torch.Tensor) -> torch.Tensor:
    """``(N, T, C, H, W)`` input gradients to heatmaps ``(N, T, H, W)`` in [0, 1]: max over
    colours of the absolute value, min-max scaled."""
    return normalize_maps(G.abs().amax(2).float(), relu=False)


def _fused_norm_act(m: nn.Module) -> bool:
    """timm's ``BatchNormAct2d`` (or the built-in model's copy of it): batch norm, then ``self.drop``,
    then ``self.act`` in its forward."""
    return (type(m).__name__ == "BatchNormAct2d" and type(m).__module__.startswith(("timm.", "convlens.models.lite0"))
            and isinstance(getattr(m, "drop", None), nn.Module) and isinstance(getattr(m, "act", None), nn.Module))


def bias_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """FullGrad's layers: every ``Conv2d`` / ``BatchNorm2d`` (exactly these types, as
    pytorch-grad-cam) and timm ``BatchNormAct2d`` with a bias, and its effective bias ``(C,)``."""
    out = {}
    for name, m in model.named_modules():
        if type(m) is nn.Conv2d and m.bias is not None:
            out[name] = m.bias.detach()
        elif isinstance(m, nn.BatchNorm2d) and m.bias is not None:
            if type(m) is not nn.BatchNorm2d and not _fused_norm_act(m):
                raise LayerError(f"FullGrad cannot read the bias gradient of {name!r} ({type(m).__name__}, a "
                                 "BatchNorm2d whose forward adds its own steps); use another method", param="method")
            out[name] = (m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)).detach()
    return out


@contextlib.contextmanager
def _pre_activation_grads(model: nn.Module, names: list[str], into: dict[str, torch.Tensor]) -> Iterator[None]:
    """The gradient of each fused norm's own output (before its activation) into ``into[name]``:
    a tensor hook on what enters its ``drop`` child (in-place activations after it leave the
    hook on the norm's output)."""
    handles = []

    def tap(name: str):
        def pre_hook(_module, args):
            z = args[0] if args else None
            if isinstance(z, torch.Tensor) and z.requires_grad:
                z.register_hook(lambda g: into.__setitem__(name, g))
        return pre_hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).drop.register_forward_pre_hook(tap(name)))
        yield
    finally:
        for h in handles:
            h.remove()


def _scale_channels(X: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, C, h, w)``: each channel min-max scaled (pytorch-grad-cam's ``scale_cam_image``),
    then upsampled to ``size``."""
    lo = X.amin(dim=(-2, -1), keepdim=True)
    X = X - lo
    X = X / (1e-7 + X.amax(dim=(-2, -1), keepdim=True))
    return upsample(X, size)


def _take(d: dict) -> dict:
    """A copy of ``d``, emptied (each backward's gradients apart)."""
    out = dict(d)
    d.clear()
    return out


def full_grad(model: nn.Module, x: torch.Tensor, score: Scorer, T: int) -> torch.Tensor:
    """FullGrad raw maps ``(N, T, H, W)`` (before the final scaling)."""
    biases = bias_layers(model)
    if not biases:
        raise LayerError("FullGrad needs layers with a bias (Conv2d, BatchNorm2d or timm's BatchNormAct2d); "
                         "this model has none", param="method")
    modules = dict(model.named_modules())
    fused = [n for n in biases if _fused_norm_act(modules[n])]
    plain = [n for n in biases if n not in fused]
    size = tuple(x.shape[-2:])
    # gradients through tensor hooks registered in the forward: a bias layer followed by an in-place
    # ReLU gets the gradient of its own output, not of the ReLU's (as pytorch-grad-cam)
    fused_grads: dict[str, torch.Tensor] = {}
    with Probe(model, plain, gradients=True) as probe, _pre_activation_grads(model, fused, fused_grads):
        per_x, per_layer = _input_grads(model, x, score, T,
                                        after=lambda: {**_take(probe.gradients), **_take(fused_grads)})
    maps = []
    for t in range(T):
        total = _scale_channels((per_x[t] * x).abs().float(), size).sum(1)
        for n, g in per_layer[t].items():
            b = biases[n].to(g.device).float()[None, :, None, None]
            total = total + _scale_channels((b * g.detach().float()).abs(), size).sum(1)
        maps.append(total)
    return torch.stack(maps, dim=1)
