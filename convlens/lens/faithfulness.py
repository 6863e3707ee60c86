"""How faithful is a heatmap to the model? The perturbation metrics, on tensors, batched.

Every function takes the model's forward (``module``, in eval mode), a preprocessed batch
``x (N, C, H, W)``, heatmaps ``maps (N, H, W)`` on the same grid (higher = more relevant) and the
target class of each image ``targets (N,)``, and scores the target's **softmax probability**.
All perturbed inputs of all images and steps go through the model in chunks of ``batch_size``;
nothing loops over images in Python.

Protocols (what each number means, exactly):

- :func:`deletion_insertion` (RISE, Petsiuk et al. 2018; TorchCAM's ``DeletionInsertionMetric``):
  positions (pixels, shared by the channels) are ranked from the highest map value down, ties by
  position (stable sort). ``steps`` intervals of ``ceil(H*W / steps)`` positions; at each point the
  first ``k`` ranked positions are replaced by the baseline (deletion, starting from the image) or
  copied from the image into the start (insertion, starting from the baseline; RISE starts from a
  blurred copy: ``insert_from="blur"``). AUC by the trapezoid rule over the perturbed fraction.
  Lower deletion AUC and higher insertion AUC mean a more faithful map.
- :func:`average_drop_increase` (Grad-CAM++, Chattopadhay et al. 2018; TorchCAM's
  ``ClassificationMetric``): the input (normalised) is multiplied by the map in [0, 1];
  drop = max(0, p - p_masked) / p, increase = [p_masked > p]; both as percentages.
- :func:`road` (ROAD, Rong et al. 2022): ``fraction`` of the pixels is removed, most relevant first
  (MoRF) or least relevant first (LeRF), and imputed by noisy linear imputation (each removed pixel
  the weighted mean of its 8 neighbours, weights 1/6 edge and 1/12 corner, plus Gaussian noise of
  0.01); the score is p_imputed - p. ``fraction`` is the share REMOVED in both orders. (In
  pytorch-grad-cam the ``percentile`` argument is the share KEPT: its ``ROADMostRelevantFirst(80)`` is
  our MoRF at 0.2 and its ``ROADLeastRelevantFirst(20)`` our LeRF at 0.8.)
  The combined score over fractions is mean(LeRF - MoRF) / 2, as pytorch-grad-cam's ``ROADCombined``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError

Forward = Callable[[torch.Tensor], torch.Tensor]


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SpecError(f"steps must be a whole number >= 1 (got {steps!r})", param="steps")
    return steps


def target_probs(module: nn.Module | Forward, x: torch.Tensor, targets: torch.Tensor,
                 batch_size: int = 64) -> torch.Tensor:
    """Softmax probability of ``targets[i]`` for each input ``x[i]``, in chunks, no autograd."""
    out = []
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            logits = module(x[s:s + batch_size]).float()
            out.append(logits.softmax(-1).gather(1, targets[s:s + batch_size, None].to(logits.device))[:, 0])
    return torch.cat(out) if out else x.new_zeros(0)


def ranks_of(maps: torch.Tensor) -> torch.Tensor:
    """``(N, H*W)`` rank of every position, 0 for the most relevant (stable: ties by position)."""
    order = torch.argsort(maps.flatten(1).float(), dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


def step_counts(positions: int, steps: int) -> list[int]:
    """How many positions are perturbed at each point of the curve (0 ... all)."""
    size = (positions + steps - 1) // steps
    return [*range(0, positions, size), positions]


def blurred(x: torch.Tensor, sigma: float = 10.0) -> torch.Tensor:
    """A Gaussian-blurred copy (RISE's insertion start); separable kernel, reflect padding."""
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, (min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def deletion_insertion(module: nn.Module | Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                       steps: int = 20, baseline: torch.Tensor | None = None, insert_from: str | torch.Tensor = "baseline",
                       batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(fractions (S,), deletion (N, S), insertion (N, S))`` probability curves; see the module doc.

    ``baseline``: what deleted positions become (default zeros in the normalised space, as TorchCAM);
    ``insert_from``: ``"baseline"`` (TorchCAM), ``"blur"`` (RISE) or a tensor like ``x``.
    """
    _check_steps(steps)
    N, C, H, W = x.shape
    P = H * W
    base = torch.zeros_like(x) if baseline is None else torch.broadcast_to(baseline.to(x), x.shape)
    if isinstance(insert_from, torch.Tensor):
        start = torch.broadcast_to(insert_from.to(x), x.shape)
    elif insert_from == "blur":
        start = blurred(x)
    elif insert_from == "baseline":
        start = base
    else:
        raise SpecError(f"insert_from must be 'baseline', 'blur' or a tensor (got {insert_from!r})", param="insert_from")
    ranks = ranks_of(maps)  # (N, P)
    counts = torch.tensor(step_counts(P, steps), device=x.device)
    S = counts.numel()
    # every (curve, image, point) job: curve 0 deletion, 1 insertion
    curve = torch.arange(2, device=x.device).repeat_interleave(N * S)
    image = torch.arange(N, device=x.device).repeat_interleave(S).repeat(2)
    point = torch.arange(S, device=x.device).repeat(2 * N)
    # (3, N, C, P): what the top positions become / the rest stays, picked per job by two gathers:
    # deletion takes (base, image), insertion (image, start)
    pairs = torch.stack([base.flatten(2), x.flatten(2), start.flatten(2)])
    scores = torch.empty(2 * N * S, device=x.device)
    with torch.inference_mode():
        for s in range(0, curve.numel(), batch_size):
            c, i, k = curve[s:s + batch_size], image[s:s + batch_size], counts[point[s:s + batch_size]]
            top = (ranks[i] < k[:, None]).unsqueeze(1)  # (B, 1, P): the k most relevant positions
            batch = torch.where(top, pairs[c, i], pairs[c + 1, i]).view(-1, C, H, W)
            logits = module(batch).float()
            scores[s:s + batch_size] = logits.softmax(-1).gather(1, targets[i, None].to(logits.device))[:, 0]
    curves = scores.view(2, N, S)
    fractions = counts.float() / P
    return fractions, curves[0], curves[1]


def auc(fractions: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Area under each curve (trapezoid rule over the perturbed fraction)."""
    return torch.trapezoid(curve, fractions.to(curve), dim=-1)


def average_drop_increase(module: nn.Module | Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                          batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``(drop %, increase %)``: the input multiplied by its map in [0, 1] (see the module doc)."""
    p = target_probs(module, x, targets, batch_size)
    q = target_probs(module, x * maps.to(x).unsqueeze(1), targets, batch_size)
    drop = torch.relu(p - q) / (p + 1e-7) * 100
    increase = (q > p).float() * 100
    return drop, increase


# -- ROAD's noisy linear imputation, for a whole batch at once --------------------------------

#: neighbour weights of the imputation (pytorch-grad-cam's ``neighbors_weights``): edges, corners
_EDGE, _CORNER = 1 / 6, 1 / 12


def _neighbours(t: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's 8 neighbours (zero outside the image), by shifted adds."""
    p = F.pad(t, (1, 1, 1, 1))
    H, W = t.shape[-2:]
    edge = p[..., 0:H, 1:W + 1] + p[..., 2:H + 2, 1:W + 1] + p[..., 1:H + 1, 0:W] + p[..., 1:H + 1, 2:W + 2]
    corner = p[..., 0:H, 0:W] + p[..., 0:H, 2:W + 2] + p[..., 2:H + 2, 0:W] + p[..., 2:H + 2, 2:W + 2]
    return edge * _EDGE + corner * _CORNER


def _cg(v: torch.Tensor, u: torch.Tensor, z: torch.Tensor, iterations: int, tol: float) -> torch.Tensor:
    """Conjugate gradients on the unknowns ``u`` (1 = unknown) of ``s*z - nb(z) = 0`` with ``v`` known."""
    s = _neighbours(torch.ones_like(u[:1]))  # in-image neighbour weight of every pixel
    k = 1 - u

    def A(t: torch.Tensor) -> torch.Tensor:  # SPD on the unknowns: s >= the sum of neighbour weights
        return (s * t - _neighbours(t * u)) * u

    b = _neighbours(v * k) * u
    z = z * u
    r = b - A(z)
    p = r.clone()
    rs = (r * r).sum(dim=(-2, -1), keepdim=True)
    bn = (b * b).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    for _ in range(iterations):
        Ap = A(p)
        alpha = rs / (p * Ap).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        z = z + alpha * p
        r = r - alpha * Ap
        rs_new = (r * r).sum(dim=(-2, -1), keepdim=True)
        if tol > 0 and bool((rs_new / bn).max() < tol * tol):
            break
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return z


def _cascade(v: torch.Tensor, u: torch.Tensor, iterations: int, tol: float) -> torch.Tensor:
    """Cascadic CG: solve a half-size problem first (blocks with any known pixel known, their mean
    value), upsample its solution as the start, then iterate on this grid."""
    H, W = v.shape[-2:]
    if min(H, W) <= 8 or bool(u.max() == 0):
        k = 1 - u
        mean = (v * k).sum(dim=(-2, -1), keepdim=True) / k.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
        return _cg(v, u, mean.expand_as(v).clone(), max(iterations, 4 * (H + W)), tol)
    k = 1 - u
    kc = F.avg_pool2d(k, 2, ceil_mode=True)
    vc = F.avg_pool2d(v * k, 2, ceil_mode=True) / kc.clamp_min(1e-12)
    uc = (kc == 0).to(v.dtype)
    zc = _cascade(vc, uc, iterations, tol)
    start = F.interpolate((vc * (1 - uc) + zc * uc).unsqueeze(1), size=(H, W), mode="bilinear",
                          align_corners=False)[:, 0]
    return _cg(v, u, start, iterations, tol)


def impute(x: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01, iterations: int = 60,
           tol: float = 1e-6, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy linear imputation of the ``removed`` pixels of ``x (N, C, H, W)`` (``removed (N, H, W)`` bool).

    Every removed pixel becomes the weighted mean of its in-image neighbours (known or removed): a
    sparse linear system per image and channel, solved here for all images and channels at once by
    conjugate gradients (the system is symmetric positive definite), matrix-free with shifted adds,
    cascaded from half-size grids so that few iterations are needed on each (``iterations`` per grid).
    Then Gaussian noise of standard deviation ``noise`` is added to the removed pixels.
    """
    N, C, H, W = x.shape
    v = x.float().reshape(N * C, H, W)
    u = removed.float().repeat_interleave(C, 0)
    z = _cascade(v, u, iterations, tol)
    out = v * (1 - u) + z * u
    if noise:
        out = out + noise * torch.randn(out.shape, generator=generator, device=x.device) * u
    return out.view(N, C, H, W).to(x.dtype)


def road(module: nn.Module | Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
         fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9), order: str = "morf", noise: float = 0.01,
         batch_size: int = 64, seed: int = 0, iterations: int = 10) -> torch.Tensor:
    """``(N, F)``: p_imputed - p after removing each ``fraction`` of the pixels in ``order``.

    ``iterations``: conjugate-gradient iterations per grid of the cascade (:func:`impute`). 10 is
    the default: on the built-in model (Grad-CAM maps, 4 images of 224 x 4 fractions) the target
    probabilities differ from the exact solve's by at most 0.004 (60: 0.0001) at a fifth of the cost.

    ``order``: ``"morf"`` (most relevant removed first) or ``"lerf"`` (least relevant first).
    Pixels are chosen by the map's percentile, as pytorch-grad-cam does (``np.percentile`` with linear
    interpolation; a pixel is kept when its value is strictly below the threshold).
    """
    if order not in ("morf", "lerf"):
        raise SpecError(f"order must be 'morf' or 'lerf' (got {order!r})", param="order")
    fr = [float(f) for f in fractions]
    if not fr or any(not 0.0 < f < 1.0 for f in fr):
        raise SpecError(f"ROAD fractions must lie strictly between 0 and 1 (got {fractions!r})", param="fractions")
    N, C, H, W = x.shape
    m = maps.float().flatten(1)
    m = m if order == "morf" else 1 - m
    # pytorch-grad-cam keeps pixels with m < percentile(m, 100 * (1 - fraction))
    q = torch.quantile(m, torch.tensor([1 - f for f in fr], device=m.device), dim=1).T  # (N, F)
    removed = ~(m[:, None, :] < q[:, :, None])  # (N, F, P)
    removed = removed.view(N * len(fr), H, W)
    xs = x.repeat_interleave(len(fr), 0)
    g = torch.Generator(device=x.device).manual_seed(seed)
    imputed = impute(xs, removed, noise=noise, iterations=iterations, generator=g)
    p = target_probs(module, x, targets, batch_size)
    pi = target_probs(module, imputed, targets.repeat_interleave(len(fr)), batch_size).view(N, len(fr))
    return pi - p[:, None]
