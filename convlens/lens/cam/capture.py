"""The CAM forward: one :class:`~convlens.probe.Probe` pass, graph only from the target layer on.

The layers before the first target run under ``torch.inference_mode`` (as a plain prediction
does); the first target layer's output becomes a leaf that requires grad, so the backward
touches only the head of the network and gradients are taken only with respect to the target
activations (the probe's ``graph`` option, with its ``no_grad`` fallback).

Whatever the layer emits (channels-first, channels-last, patch tokens), the activation is the
Probe's grid ``(N, C, H, W)`` and the leaf of the graph, so the gradients come back on the same
grid; a layer followed by an in-place ReLU (DenseNet's ``features``) holds the values the next
layer sees (see :class:`~convlens.probe.Probe`).

>>> import torch
>>> from torch import nn
>>> from .formulas import grad_cam
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
>>> logits, acts = cam_forward(net, torch.randn(2, 3, 8, 8), ["1"], gradients=True)
>>> grads = target_gradients(logits, acts, torch.tensor([[0], [1]]))
>>> tuple(grad_cam(acts["1"], grads["1"]).shape)
(2, 1, 6, 6)
>>> len(net[1]._forward_hooks)
0
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...errors import LayerError
from ...probe import Probe


def cam_forward(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, gradients: bool = True
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``x``; the logits (graph from the first target layer on, if ``gradients``)
    and each target layer's activation as a grid ``(N, C, H, W)`` (a leaf requiring grad, when
    ``gradients``)."""
    with Probe(model, list(layers), gradients=gradients, graph=True) as probe:
        logits = probe.run(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise LayerError(f"the model's output is {shape}, not class scores (N, classes)")
    return logits, dict(probe.activations)


def target_gradients(logits: torch.Tensor, activations: dict[str, torch.Tensor], targets: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """Gradients of the target logits w.r.t. each activation: ``(N, T, C, h, w)`` per layer.

    ``targets``: ``(N, T)`` class indices.  One backward per target column (images are
    independent, so their scores are summed).
    """
    names = list(activations)
    acts = [activations[n] for n in names]
    if not logits.requires_grad:
        raise LayerError(f"the class scores do not depend on layer {names[0]!r}", param="layer")
    T = targets.shape[1]
    per_t: list[tuple[torch.Tensor, ...]] = []
    for t in range(T):
        score = logits.gather(1, targets[:, t:t + 1]).sum()
        g = torch.autograd.grad(score, acts, retain_graph=t < T - 1, allow_unused=True)
        per_t.append(tuple(torch.zeros_like(a) if gi is None else gi for gi, a in zip(g, acts)))
    return {n: torch.stack([p[k] for p in per_t], dim=1).detach() for k, n in enumerate(names)}
