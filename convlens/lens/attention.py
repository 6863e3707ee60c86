"""Transformer-native maps from a vision transformer's attention: rollout and Chefer et al.

For timm ViT / DeiT-style models (``blocks[i].attn`` computing softmax attention over a class
token, optional prefix tokens and a patch grid).  timm computes attention with fused SDPA, which
exposes no probabilities, so for the forward the blocks' ``fused_attn`` is set to False (and
restored after, also on errors): the attention probabilities then pass through each block's
``attn_drop`` module, where :class:`~convlens.probe.Probe` records them and their gradients.

* ``rollout`` (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): per layer
  the head-mean attention plus the identity (the residual), halved and rows renormalised;
  ``R = A_L ... A_1``; the map is the class token's row over the patch tokens.  It does not
  depend on the target (the same map for every target).
* ``chefer`` (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability", eq. 5-6):
  ``R = I``; per layer ``R <- R + mean_heads(ReLU(dS/dA * A)) R``; the class token's row over the
  patch tokens, for each target score ``S``.

Both are reshaped to the patch grid (``patch_embed.grid_size``), upsampled to the input and
min-max scaled, like the CAMs: they come out of :func:`~convlens.lens.cam.explain` as methods
``rollout`` and ``chefer``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LayerError
from ..probe import Probe

ATTENTION_METHODS = ("rollout", "chefer")

def attention_layers(model: nn.Module) -> list[str]:
    """The names of the attention modules whose probabilities convlens can read (timm's
    ``Attention``: a ``qkv`` projection, ``fused_attn`` and an ``attn_drop``), in order."""
    return [name for name, m in model.named_modules()
            if hasattr(m, "fused_attn") and hasattr(m, "qkv") and isinstance(getattr(m, "attn_drop", None), nn.Module)]


def token_grid(model: nn.Module) -> tuple[int, tuple[int, int]]:
    """``(prefix tokens, (grid h, grid w))`` of a timm vision transformer."""
    pe = getattr(model, "patch_embed", None)
    grid = getattr(pe, "grid_size", None)
    if grid is None:
        raise LayerError(f"{type(model).__name__} has no patch grid (timm's patch_embed.grid_size); attention maps "
                         "need a ViT/DeiT-style model", param="method")
    return int(getattr(model, "num_prefix_tokens", 1)), (int(grid[0]), int(grid[1]))


@contextlib.contextmanager
def unfused(modules: list[nn.Module]) -> Iterator[None]:
    """``fused_attn = False`` on ``modules`` while the block runs, each restored after."""
    before = [m.fused_attn for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield
    finally:
        for m, b in zip(modules, before):
            m.fused_attn = b


def rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout ``(N, tokens, tokens)`` from per-layer probabilities ``(N, heads, n, n)``."""
    R = None
    for A in attentions:
        a = A.float().mean(1)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = (a + eye) / 2
        a = a / a.sum(-1, keepdim=True)
        R = a if R is None else a @ R
    return R


def rollout_row(attentions: list[torch.Tensor], row: int = 0) -> torch.Tensor:
    """Row ``row`` of :func:`rollout` ``(N, tokens)`` (the class token's, by default) without the
    full product: ``e_row^T A_L ... A_1`` as vector-matrix products from the last layer down, ``n^2``
    work per layer instead of ``n^3``."""
    r = None
    for A in reversed(attentions):
        a = A.float().mean(1)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = (a + eye) / 2
        a = a / a.sum(-1, keepdim=True)
        r = a[:, row] if r is None else torch.bmm(r.unsqueeze(1), a).squeeze(1)
    return r


def chefer(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance ``(N, tokens, tokens)``: ``R = I + sum`` of the gradient-weighted
    head-mean attention of each layer applied to ``R`` in order."""
    N, _, n, _ = attentions[0].shape
    R = torch.eye(n, device=attentions[0].device).expand(N, n, n).clone()
    for A, G in zip(attentions, gradients):
        cam = (G.float() * A.float()).clamp(min=0).mean(1)
        R = R + cam @ R
    return R


def scale_maps(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """``(N, T, h, w)`` raw maps (one in the list) to ``size``, in [0, 1]: ReLU and min-max, bilinear
    upsampling (half-pixel centres), min-max again -- as the CAMs are scaled."""
    (m,) = maps
    N, T, h, w = m.shape

    def minmax(a: torch.Tensor) -> torch.Tensor:
        lo = a.amin(dim=(-2, -1), keepdim=True)
        return (a - lo) / (a.amax(dim=(-2, -1), keepdim=True) - lo + 1e-7)

    up = F.interpolate(minmax(m.float().clamp(min=0)).reshape(N * T, 1, h, w), size=size, mode="bilinear",
                       align_corners=False)
    return minmax(up.reshape(N, T, *size))


def attention_maps(model: nn.Module, x: torch.Tensor, methods: list[str], targets: Callable[[torch.Tensor], Any]
                   ) -> tuple[dict[str, torch.Tensor], Any, torch.Tensor]:
    """Maps ``(N, T, H, W)`` in [0, 1] of the attention ``methods``, the target columns and the
    model's output, from one forward: ``targets(output)`` resolves the targets on it (an object with
    ``score(out, rows) -> (N, T)`` and a length ``T``)."""
    names = attention_layers(model)
    if not names:
        raise LayerError(f"{type(model).__name__} has no attention layers convlens can read (timm ViT/DeiT "
                         "blocks); attention rollout and chefer need one", param="method")
    prefix, (gh, gw) = token_grid(model)
    mods = dict(model.named_modules())
    drops = [f"{n}.attn_drop" for n in names]
    size = tuple(x.shape[-2:])
    need_grad = "chefer" in methods
    # rollout alone: no graph at all (inference mode, as a prediction); chefer: the graph, for the gradients
    mode = contextlib.ExitStack()
    if need_grad:
        mode.enter_context(torch.inference_mode(False))
        mode.enter_context(torch.enable_grad())
    else:
        mode.enter_context(torch.inference_mode())
    with unfused([mods[n] for n in names]), Probe(model, drops, gradients=need_grad) as probe, mode:
        xi = x.detach().clone().requires_grad_(need_grad)
        out = model(xi)
        cols = targets(out.detach())
        T = len(cols)
        atts = [probe.activations[d].detach() for d in drops if d in probe.activations]
        if len(atts) != len(drops) or atts[0].ndim != 4:
            raise LayerError("the attention probabilities were not recorded: the model does not run its "
                             "attention through attn_drop", param="method")
        grads_per_t = []
        if need_grad:
            scores = cols.score(out.float(), None)
            for t in range(T):
                probe.gradients.clear()
                torch.autograd.grad(scores[:, t].sum(), xi, retain_graph=t < T - 1)
                grads_per_t.append([probe.gradients[d].detach() for d in drops])
    n_tok = atts[0].shape[-1]
    if n_tok != prefix + gh * gw:
        raise LayerError(f"{n_tok} tokens do not make {prefix} prefix tokens and a {gh}x{gw} patch grid",
                         param="method")
    out_maps: dict[str, torch.Tensor] = {}

    def to_map(R: torch.Tensor) -> torch.Tensor:  # (N, n, n) -> (N, gh, gw): the class token's row
        return R[:, 0, prefix:].reshape(-1, gh, gw)

    if "rollout" in methods:
        m = rollout_row(atts)[:, prefix:].reshape(-1, gh, gw)
        out_maps["rollout"] = scale_maps([m.unsqueeze(1).expand(-1, T, -1, -1)], size)
    if "chefer" in methods:
        m = torch.stack([to_map(chefer(atts, g)) for g in grads_per_t], dim=1)
        out_maps["chefer"] = scale_maps([m], size)
    return out_maps, cols, out.detach()
