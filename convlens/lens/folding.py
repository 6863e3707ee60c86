"""An inference-only copy of a network with each BatchNorm folded into the convolution feeding it.

In eval mode a BatchNorm is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``;
after a convolution it can be folded into the convolution's weights and bias (the standard
inference-time rewrite), which saves one full pass over every feature map. The result equals the
original network up to float rounding. The metrics of :mod:`convlens.lens.faithfulness` run hundreds of
no-grad forwards of the same model, so they use such a copy where one can be made.

The copy also runs TensorFlow-style 'SAME' convolutions (timm's ``Conv2dSame``, in every ``tf_``
model: the built-in EfficientNet-Lite0 has five) without padding their input first: ``pad_same``
copies a whole feature map into a larger zeroed one before each such convolution (without those
copies, 20 forwards of the built-in model on 2 CPU cores took 139 instead of 148 ms). Its padding
is ``p // 2`` before and ``p - p // 2`` after; where those differ, the same sums come from a symmetric
padding of ``p // 2 + 1`` and a kernel with one zero row (column) in front, which the convolution
takes without any copy (:class:`SamePadConv`).

Safety: the user's module is never touched (the work is done on a ``deepcopy``); the graph is traced
with :mod:`torch.fx` (convolutions and batch norms kept as leaves) and a pair is folded only where a
``Conv2d``'s output goes to exactly one ``BatchNorm2d`` (using running statistics) and nowhere else.
Anything unusual (a trace that fails, hooks, a module that is not a ``torch.nn.Module``) gives ``None``:
the caller then uses the original module as it is.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn


class _Tracer(fx.Tracer):
    """Keeps every convolution and batch norm (subclasses included, e.g. timm's) a single node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, qualname)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    """TensorFlow's total 'SAME' padding along one axis (timm's ``get_same_padding``)."""
    return max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class SamePadConv(nn.Conv2d):
    """timm's ``Conv2dSame`` (TensorFlow 'SAME' padding, computed from the input's size) without the
    padded copy of the input (see the module doc). Same parameters, same results up to float rounding."""

    @classmethod
    def of(cls, conv: nn.Conv2d) -> "SamePadConv":
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                  conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = _same_pad(x.shape[-2], kh, sh, 1)
        pw = _same_pad(x.shape[-1], kw, sw, 1)
        uneven_h, uneven_w = ph % 2, pw % 2
        w = self.weight if not (uneven_h or uneven_w) else F.pad(self.weight, (uneven_w, 0, uneven_h, 0))
        return F.conv2d(x, w, self.bias, self.stride, (ph // 2 + uneven_h, pw // 2 + uneven_w), 1, self.groups)


def _is_timm_same(m: nn.Module) -> bool:
    """timm's ``Conv2dSame`` (or the built-in model's copy of it) as it comes (dilation 1, no padding)."""
    return (type(m).__name__ == "Conv2dSame" and type(m).__module__.startswith(("timm.", "convlens.models.lite0"))
            and isinstance(m, nn.Conv2d) and tuple(m.dilation) == (1, 1) and tuple(m.padding) == (0, 0)
            and m.padding_mode == "zeros")


def _has_hooks(module: nn.Module) -> bool:
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(m, h, None) for m in module.modules() for h in hook_dicts) or bool(
        nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)


def _after_bn(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What is left of ``bn`` once its affine map is folded away (None: we do not know this class)."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    # timm's BatchNormAct2d: batch_norm, then drop, then act (its forward, timm >= 0.9)
    if type(bn).__name__ == "BatchNormAct2d" and isinstance(getattr(bn, "drop", None), nn.Module) \
            and isinstance(getattr(bn, "act", None), nn.Module):
        return nn.Sequential(bn.drop, bn.act)
    return None


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            and bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None
            and conv.out_channels == bn.num_features and conv.weight.dtype.is_floating_point
            and not conv.weight.is_meta)


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(scale)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
    scale = scale * gamma
    w = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    b = (b - bn.running_mean.double()) * scale + beta
    conv.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=False)


def fold_batchnorm(module: Any) -> nn.Module | None:
    """An eval-mode copy of ``module`` with its (Conv2d -> BatchNorm2d) pairs folded, or None when no
    pair could be folded safely (see the module doc). ``module`` itself is left exactly as it was."""
    if not isinstance(module, nn.Module) or _has_hooks(module):
        return None
    try:
        net = copy.deepcopy(module)
        graph = _Tracer().trace(net)
    except Exception:  # any model fx cannot trace: no copy, the caller uses the original
        return None
    net.eval()
    mods = dict(net.named_modules())
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (len(node.args) != 1 or node.kwargs or not isinstance(src, fx.Node) or src.op != "call_module"
                or len(src.users) != 1):
            continue
        conv, bn = mods.get(src.target), mods[node.target]
        rest = _after_bn(bn) if _foldable(conv, bn) else None
        if rest is None:
            continue
        _fold_into(conv, bn)
        parent, _, name = node.target.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, name, rest)
        folded += 1
    for name, m in list(net.named_modules()):
        if _is_timm_same(m):
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, SamePadConv.of(m))
    if not folded:
        return None
    gm = fx.GraphModule(net, graph)
    gm.eval()
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm


#: one folded copy per live module, remade when any parameter or buffer of it changes
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]]" = weakref.WeakKeyDictionary()


def _fingerprint(module: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version, t.shape, t.dtype, t.device)
                 for t in (*module.parameters(), *module.buffers()))


def inference_copy(module: Any) -> Any:
    """The module to run no-grad metric forwards through: a cached :func:`fold_batchnorm` copy when one
    can be made and the module has no hooks now, else ``module`` itself. The cache entry is remade
    when any parameter or buffer of ``module`` is replaced or changed in place (training, loading)."""
    if not isinstance(module, nn.Module) or module.training or _has_hooks(module):
        return module
    key = _fingerprint(module)
    hit = _CACHE.get(module)
    if hit is not None and hit[0] == key:
        return hit[1] if hit[1] is not None else module
    folded = fold_batchnorm(module)
    _CACHE[module] = (key, folded)
    return folded if folded is not None else module
