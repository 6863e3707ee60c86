"""How faithful is a heatmap to the model? The perturbation metrics, on tensors, batched.

Every function takes the model's forward (``module``, in eval mode), a preprocessed batch
``x (N, C, H, W)``, heatmaps ``maps (N, H, W)`` on the same grid (higher = more relevant) and the
target class of each image ``targets (N,)``, and scores the target's **softmax probability**.
All perturbed inputs of all images and steps go through the model in chunks of ``batch_size``
(default :data:`FORWARD_BATCH`); nothing loops over images in Python. The forwards run, by
default (``fold=True``), through an inference-only copy of the network with its batch norms
folded into the convolutions before them (:mod:`convlens.lens.folding`; equal up to float
rounding, the user's module untouched), and each distinct input is forwarded once (the
unperturbed image shared by deletion, insertion and the maps of several methods; the
all-baseline input shared by all images).

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
from ..options import ScoreOptions, check_options
from .folding import inference_copy
from .imputation import impute

Forward = Callable[[torch.Tensor], torch.Tensor]

#: inputs per forward of the metrics (no autograd), the default here and of ``score``: on 2 CPU
#: cores, with the allocator ``import convlens`` sets, deletion+insertion (20 steps x 8 images)
#: took 0.775 / 0.812 / 0.754 of TorchCAM's time (its batch 32) at batch 8 / 16 / 32 with
#: ``OMP_WAIT_POLICY`` unset, and 0.878 / 0.838 / 0.774 with PASSIVE (fewer, larger operations
#: wake the threads less often), measured 2026-12-07
FORWARD_BATCH = 32


def _check_steps(steps: int) -> int:
    return check_options(ScoreOptions, steps=steps).steps


def unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, inverse)``: the index of one representative of each distinct row of ``x`` (exact
    equality of all its values) and, for every row, the position of its representative in ``first``
    (``x[first][inverse]`` equals ``x``). Rows are grouped by a random projection, then checked
    exactly; a row that only shares the projection stays on its own (so a collision costs a forward,
    never a wrong score)."""
    n = x.shape[0]
    ar = torch.arange(n, device=x.device)
    if n <= 1:
        return ar, ar
    flat = x.reshape(n, -1)
    g = torch.Generator(device="cpu").manual_seed(12345)
    w = torch.rand(flat.shape[1], generator=g).to(device=flat.device, dtype=flat.dtype)
    _, inv = torch.unique(flat @ w, return_inverse=True)
    first_of_key = torch.full((int(inv.max()) + 1,), n, device=x.device, dtype=torch.long)
    first_of_key.scatter_reduce_(0, inv, ar, reduce="amin")
    rep = first_of_key[inv]
    dup = (rep != ar).nonzero()[:, 0]
    if dup.numel():
        same = (flat[dup] == flat[rep[dup]]).all(dim=1)
        rep[dup[~same]] = dup[~same]
    first, inverse = torch.unique(rep, return_inverse=True)
    return first, inverse


def _net(module: nn.Module | Forward, fold: bool) -> nn.Module | Forward:
    """The forward the metrics run: with ``fold``, an inference copy of ``module`` with its batch norms
    folded into the convolutions (:func:`convlens.lens.folding.inference_copy`; equal up to float
    rounding, ``module`` untouched), else ``module`` itself."""
    return inference_copy(module) if fold else module


def target_probs(module: nn.Module | Forward, x: torch.Tensor, targets: torch.Tensor,
                 batch_size: int = FORWARD_BATCH, *, fold: bool = True) -> torch.Tensor:
    """Softmax probability of ``targets[i]`` for each input ``x[i]``, in chunks, no autograd."""
    net = _net(module, fold)
    out = []
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            logits = net(x[s:s + batch_size]).float()
            out.append(logits.softmax(-1).gather(1, targets[s:s + batch_size, None].to(logits.device))[:, 0])
    return torch.cat(out) if out else x.new_zeros(0)


def _class_probs(net: nn.Module | Forward, x: torch.Tensor | list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """Softmax over the classes of every input (of ``x``, or of the tensors of the list one after the
    other, batched across them without concatenating them first), in chunks, no autograd."""
    parts = x if isinstance(x, list) else [x]
    ends = torch.tensor([p.shape[0] for p in parts]).cumsum(0).tolist()
    total = ends[-1] if ends else 0
    out = []
    with torch.inference_mode():
        for s in range(0, total, batch_size):
            e = min(s + batch_size, total)
            pieces, lo = [], 0
            for p, hi in zip(parts, ends):
                a, b = max(s, lo), min(e, hi)
                if b > a:
                    pieces.append(p[a - lo:b - lo])
                lo = hi
            out.append(net(pieces[0] if len(pieces) == 1 else torch.cat(pieces)).float().softmax(-1))
    return torch.cat(out)


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


def _is_shared(baseline: torch.Tensor | None) -> bool:
    """True when one baseline serves every image (None = zeros, or no batch dimension / batch of 1)."""
    return baseline is None or baseline.dim() < 4 or baseline.shape[0] == 1


def deletion_insertion(module: nn.Module | Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                       steps: int = 20, baseline: torch.Tensor | None = None,
                       insert_from: str | torch.Tensor = "baseline", batch_size: int = FORWARD_BATCH,
                       fold: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(fractions (S,), deletion (N, S), insertion (N, S))`` probability curves; see the module doc.

    ``baseline``: what deleted positions become (default zeros in the normalised space, as TorchCAM);
    ``insert_from``: ``"baseline"`` (TorchCAM), ``"blur"`` (RISE) or a tensor like ``x``;
    ``fold``: run the forwards through an inference copy with the batch norms folded (:func:`_net`).

    Each distinct input is forwarded once: the unperturbed image (deletion's first point and
    insertion's last, and the same image scored for several maps), the all-baseline input
    (deletion's last point; one for all images when the baseline is shared) and the insertion start
    (insertion's first point; the baseline itself by default). The interior points are all distinct.
    """
    _check_steps(steps)
    N, C, H, W = x.shape
    P = H * W
    xf, xinv = unique_rows(x)  # distinct images
    base = torch.zeros_like(x) if baseline is None else torch.broadcast_to(baseline.to(x), x.shape)
    if _is_shared(baseline):
        bf, binv = torch.zeros(1, dtype=torch.long, device=x.device), torch.zeros(N, dtype=torch.long, device=x.device)
    else:
        bf, binv = unique_rows(base)
    if isinstance(insert_from, torch.Tensor):
        start = torch.broadcast_to(insert_from.to(x), x.shape)
        sf, sinv = (bf[:1], torch.zeros_like(binv)) if _is_shared(insert_from) else unique_rows(start)
        ends = [x[xf], base[bf], start[sf]]
    elif insert_from == "blur":
        ux_blur = blurred(x[xf])  # each distinct image blurred once
        start = ux_blur[xinv]
        sf, sinv = torch.arange(xf.numel(), device=x.device), xinv
        ends = [x[xf], base[bf], ux_blur]
    elif insert_from == "baseline":
        start = base
        ends = [x[xf], base[bf]]
        sf, sinv = bf, binv
    else:
        raise SpecError(f"insert_from must be 'baseline', 'blur' or a tensor (got {insert_from!r})",
                        param="insert_from")
    ranks = ranks_of(maps)  # (N, P)
    counts = torch.tensor(step_counts(P, steps), device=x.device)
    S = counts.numel()
    # the interior (curve, image, point) jobs: curve 0 deletion, 1 insertion, points 1 .. S-2
    inner = torch.arange(1, S - 1, device=x.device)
    J = 2 * N * inner.numel()
    curve = torch.arange(2, device=x.device).repeat_interleave(N * inner.numel())
    image = torch.arange(N, device=x.device).repeat_interleave(inner.numel()).repeat(2)
    point = inner.repeat(2 * N)
    # (3N, C, P), the bases, the images and the starts: what the top positions become / the rest
    # stays, picked per job by two row selections (deletion (base, image), insertion (image, start));
    # index_select on the flat rows instead of advanced indexing: 4.1 -> 3.1 ms a batch of 8 at 224 px
    pairs = torch.cat([base.flatten(2), x.flatten(2), start.flatten(2)]) if J else None
    pure = torch.cat(ends)  # the distinct unperturbed, all-baseline and start inputs, forwarded first
    U = pure.shape[0]
    net = _net(module, fold)
    pure_probs, inner_scores = [], torch.empty(J, device=x.device)
    with torch.inference_mode():
        for s in range(0, U + J, batch_size):
            parts, e = [], s + batch_size
            if s < U:
                parts.append(pure[s:min(e, U)])
            j0, j1 = min(max(s - U, 0), J), min(max(e - U, 0), J)  # steps=1: no interior job (J = 0)
            if j1 > j0:
                c, i, k = curve[j0:j1], image[j0:j1], counts[point[j0:j1]]
                top = (ranks.index_select(0, i) < k[:, None]).unsqueeze(1)  # (B, 1, P): the k most relevant
                row = c * N + i
                parts.append(torch.where(top, pairs.index_select(0, row), pairs.index_select(0, row + N))
                             .view(-1, C, H, W))
            probs = net(torch.cat(parts) if len(parts) > 1 else parts[0]).float().softmax(-1)
            n_pure = max(0, min(e, U) - s)
            if n_pure:
                pure_probs.append(probs[:n_pure])
            if j1 > j0:
                inner_scores[j0:j1] = probs[n_pure:].gather(1, targets[image[j0:j1], None].to(probs.device))[:, 0]
    pp = torch.cat(pure_probs)
    t = targets[:, None].to(pp.device)
    nx, nb = xf.numel(), bf.numel()
    p_image = pp[:nx][xinv].gather(1, t)[:, 0]
    p_base = pp[nx:nx + nb][binv].gather(1, t)[:, 0]
    p_start = (pp[nx + nb:] if len(ends) == 3 else pp[nx:nx + nb])[sinv].gather(1, t)[:, 0]
    inner_curves = inner_scores.view(2, N, inner.numel())
    deletion = torch.cat([p_image[:, None], inner_curves[0], p_base[:, None]], 1)
    insertion = torch.cat([p_start[:, None], inner_curves[1], p_image[:, None]], 1)
    fractions = counts.float() / P
    return fractions, deletion, insertion


def auc(fractions: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Area under each curve (trapezoid rule over the perturbed fraction)."""
    return torch.trapezoid(curve, fractions.to(curve), dim=-1)


def average_drop_increase(module: nn.Module | Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                          batch_size: int = FORWARD_BATCH, fold: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``(drop %, increase %)``: the input multiplied by its map in [0, 1] (see the module doc)."""
    first, inverse = unique_rows(x)  # each distinct image forwarded once
    t = targets.to(x.device)
    p = _class_probs(_net(module, fold), x[first], batch_size)[inverse].gather(1, t[:, None])[:, 0]
    q = target_probs(module, x * maps.to(x).unsqueeze(1), targets, batch_size, fold=fold)
    drop = torch.relu(p - q) / (p + 1e-7) * 100
    increase = (q > p).float() * 100
    return drop, increase


def road(module: nn.Module | Forward, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
         fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9), order: str = "morf", noise: float = 0.01,
         batch_size: int = FORWARD_BATCH, seed: int = 0, cycles: int = 0, fold: bool = True) -> torch.Tensor:
    """``(N, F)``: p_imputed - p after removing each ``fraction`` of the pixels in ``order``.

    The removed pixels are imputed for all images and fractions at once by full multigrid
    (:mod:`convlens.lens.imputation`); ``cycles`` extra V-cycles bring the imputation closer to the
    exact sparse solve. Measured against pytorch-grad-cam's scores (its exact sparse solve, noise 0)
    on 14 photos x Grad-CAM and LayerCAM maps x both orders x fractions 0.1-0.9: within 0.014 with
    no extra cycle (the default), 0.002 with one (about 25 ms more for 16 masks at 224 px on 2 CPU
    cores, against about 190 ms for the whole ROAD of 4 images x 4 fractions). ``fold``: run the
    forwards through an inference copy with the batch norms folded (:func:`_net`). Equal inputs
    (the same image scored for several methods) are forwarded once.

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
    imputed = impute(xs, removed, noise=noise, cycles=cycles, generator=g)
    first, inverse = unique_rows(x)  # p of each distinct image once, in the same batches as the rest
    U = first.numel()
    probs = _class_probs(_net(module, fold), [x[first], imputed], batch_size)
    t = targets.to(probs.device)
    p = probs[:U][inverse.to(probs.device)].gather(1, t[:, None])[:, 0]
    pi = probs[U:].gather(1, t.repeat_interleave(len(fr))[:, None])[:, 0].view(N, len(fr))
    return pi - p[:, None]
