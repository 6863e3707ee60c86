"""``Probe``: capture activations (and gradients) of chosen layers in one pass.

The base class that owns the hooks (TorchCAM's idea): every view that needs
what happens inside a model (journey, CAMs, feature visualisation) goes
through it, so hooks are registered in one place and always removed, also
when the forward raises.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
>>> with Probe(net, ["0"]) as probe:
...     _ = net(torch.zeros(1, 1, 5, 5))
>>> tuple(probe.activations["0"].shape)
(1, 2, 3, 3)
>>> len(net[0]._forward_hooks)
0
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import LayerError, closest
from ..models.layers import first_tensor


def resolve_modules(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """Map module paths to modules, with a clear error naming the closest paths."""
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for name in names:
        if not name or name not in modules:
            raise LayerError(f"unknown layer {name!r}{closest(name, [n for n in modules if n])}"
                             " (list them with `convlens layers`)")
        out[name] = modules[name]
    return out


class Probe:
    """Context manager that records the outputs of named layers.

    ``clone``: names whose outputs must be copied because later code modifies
    them in place (see ``LayerTable.inplace_mutated``); ``True`` copies all.
    ``gradients=True`` also records the gradient flowing into each output
    during a backward pass (the outputs must require grad).
    ``transform``: optional callable ``(name, tensor) -> tensor`` applied to
    what is stored (e.g. selecting channels to save memory).
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], *, gradients: bool = False,
                 clone: bool | Iterable[str] = False, detach: bool = True,
                 transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None):
        self.model = model
        self.modules = resolve_modules(model, list(layers))
        self.want_gradients = gradients
        self.clone_all = clone is True
        self.clone_names = set() if isinstance(clone, bool) else set(clone)
        self.detach = detach
        self.transform = transform
        self.activations: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def layers(self) -> list[str]:
        return list(self.modules)

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            t = first_tensor(output)
            if t is None:
                return
            if self.want_gradients and t.requires_grad:
                t.register_hook(lambda g, n=name: self.gradients.__setitem__(n, g))
            kept = t.detach() if self.detach else t
            if self.transform is not None:
                kept = self.transform(name, kept)
            elif self.clone_all or name in self.clone_names:
                kept = kept.clone()
            self.activations[name] = kept

        return hook

    def __enter__(self) -> "Probe":
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()

    def clear(self) -> None:
        self.activations.clear()
        self.gradients.clear()
