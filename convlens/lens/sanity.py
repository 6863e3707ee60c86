"""Sanity check of heatmaps: cascading model-parameter randomisation (Adebayo et al. 2018).

``sanity(model, images, method)`` explains the images with the original model (stage 0), then
re-initialises the model's parameterised layers from the top (the output) down, one stage at a time
(the stages of the layer table, :meth:`LensModel.stage_layers`, plus the head after the last one),
explains again after each, and reports the Spearman rank correlation and the SSIM of each map with
the original's. Stage ``k`` has the top ``k`` groups randomised; the last stage is the fully
randomised network. A method whose maps barely change is not explaining the model.

Re-initialisation (seeded): weights with two or more dimensions from N(0, 2 / fan_in) (He), biases
N(0, 0.01^2), a normalisation layer's scale N(1, 0.1^2) and shift N(0, 0.1^2), with its running
statistics reset (mean 0, variance 1). Targets and layers stay those of the original model.
The model is restored afterwards, bitwise, also when something fails.

``edge`` is a model-independent control: the Sobel gradient magnitude of the (grey) input; its
maps never change, so its correlation stays 1. A constant map (nothing to rank) correlates 0.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import SpecError
from ..names import split_names
from ..render.colors import colorize
from ..render.figures import agg_figure, figure_image
from ..render.files import OutDir, Saved
from ..render.grid import grid, titled
from ..view import View
from .cam import explain
from .cam.layers import as_lens
from .cam.targets import parse_methods
from .cam.verb import prepare

#: the model-independent control method
CONTROLS = ("edge",)
#: Spearman is computed on maps average-pooled to at most this many pixels a side
RANK_SIDE = 56
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def edge_maps(x: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` Sobel gradient magnitude of the channel mean of ``x``, scaled to [0, 1]."""
    g = x.float().mean(1, keepdim=True)
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    gp = F.pad(g, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(gp, k.view(1, 1, 3, 3))
    gy = F.conv2d(gp, k.t().contiguous().view(1, 1, 3, 3))
    m = torch.sqrt(gx ** 2 + gy ** 2)[:, 0]
    lo = m.flatten(1).amin(1).view(-1, 1, 1)
    hi = m.flatten(1).amax(1).view(-1, 1, 1)
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def stage_groups(lm: Any) -> list[tuple[str, list[nn.Module]]]:
    """The model's parameterised modules grouped by stage, from the input to the output.

    A module belongs to the stage whose name prefixes its own; modules outside every stage join the
    stage before them (or the first); those after the last stage form ``head``. Groups without
    parameters are dropped."""
    stages = list(lm.stage_layers())
    owners = [(n, m) for n, m in lm.module.named_modules() if any(True for _ in m.parameters(recurse=False))]
    groups: dict[str, list[nn.Module]] = {s: [] for s in stages}
    order = list(stages)
    current, seen_last = (stages[0] if stages else "head"), False
    for name, mod in owners:
        hit = next((s for s in stages if name == s or name.startswith(s + ".")), None)
        if hit is not None:
            current = hit
            seen_last = seen_last or hit == stages[-1]
        elif seen_last:
            current = "head"
        if current not in groups:
            groups[current] = []
            order.append(current)
        groups[current].append(mod)
    return [(s, groups[s]) for s in order if groups[s]]


def randomise(modules: Sequence[nn.Module], generator: torch.Generator) -> None:
    """Re-initialise the parameters (and norm statistics) of ``modules`` in place (see the module doc)."""
    with torch.no_grad():
        for mod in modules:
            norm = isinstance(mod, _NORMS)
            for pname, p in mod.named_parameters(recurse=False):
                if p.ndim >= 2:
                    fan_in = p[0].numel()
                    new = torch.randn(p.shape, generator=generator) * (2.0 / max(1, fan_in)) ** 0.5
                elif norm and pname == "weight":
                    new = 1 + 0.1 * torch.randn(p.shape, generator=generator)
                else:
                    new = (0.1 if norm else 0.01) * torch.randn(p.shape, generator=generator)
                p.copy_(new.to(p))
            if norm and getattr(mod, "running_mean", None) is not None:
                mod.running_mean.zero_()
                mod.running_var.fill_(1)


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks ``0 .. P-1`` of each row of ``(K, P)``, ties given their average rank (as scipy's rankdata)."""
    K, P = v.shape
    sv, order = torch.sort(v, dim=1, stable=True)
    pos = torch.arange(P, device=v.device).expand(K, P)
    new = torch.ones(K, P, dtype=torch.bool, device=v.device)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    end = torch.ones(K, P, dtype=torch.bool, device=v.device)
    end[:, :-1] = new[:, 1:]
    first = torch.where(new, pos, torch.zeros_like(pos)).cummax(1).values
    last = torch.where(end, pos, torch.full_like(pos, P)).flip(1).cummin(1).values.flip(1)
    ranks = torch.empty(K, P, dtype=torch.float64, device=v.device)
    ranks.scatter_(1, order, (first + last).double() / 2)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor | None = None, *, ref_ranks: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman correlation of each pair of rows ``(K, P)`` of ``a`` and ``b`` (or ``b``'s ranks
    ``ref_ranks``, from :func:`average_ranks`); average ranks for ties; 0 when a row is constant."""
    ra = average_ranks(a.float())
    rb = ref_ranks if ref_ranks is not None else average_ranks(b.float())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.norm(dim=1) * rb.norm(dim=1))
    r = (ra * rb).sum(1) / den.clamp_min(1e-12)
    return torch.where(den > 1e-9, r, torch.zeros_like(r)).float()


class _Box7:
    """The 7 x 7 box mean of float32 ``(H, W)`` maps where the window fits ("valid": ``(H-6, W-6)``),
    as sums of shifted slices, 1+1 -> 2, 2+2 -> 4, 4+2+1 -> 7 per axis (4 adds an axis), into
    buffers made once. Faster than SciPy's ``uniform_filter1d`` on both axes, which converts every
    line to float64 and back; the price is float32 sums (timings: ``bench/RESULTS.md``, "Moved from
    docstrings")."""

    def __init__(self, H: int, W: int):
        f = np.float32
        self.v2, self.v4, self.v7 = np.empty((H - 1, W), f), np.empty((H - 3, W), f), np.empty((H - 6, W), f)
        self.h2, self.h4 = np.empty((H - 6, W - 1), f), np.empty((H - 6, W - 3), f)

    def __call__(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        H, W = x.shape
        v2, v4, v7, h2, h4 = self.v2, self.v4, self.v7, self.h2, self.h4
        np.add(x[:-1], x[1:], out=v2)
        np.add(v2[:-2], v2[2:], out=v4)
        np.add(v4[:H - 6], v2[4:H - 2], out=v7)
        v7 += x[6:]
        np.add(v7[:, :-1], v7[:, 1:], out=h2)
        np.add(h2[:, :-2], h2[:, 2:], out=h4)
        np.add(h4[:, :W - 6], h2[:, 4:W - 2], out=out)
        out += v7[:, 6:]
        out *= np.float32(1 / 49)
        return out


class SSIM:
    """scikit-image's ``structural_similarity`` (7x7 uniform window, sample covariance, data range 1,
    the mean over the image less its 3-pixel border) of maps against fixed reference maps.

    The references' local means and variances are computed once. The box means are float32 sums
    (:class:`_Box7`, only where the window fits, which is all the mean looks at), faster than
    float64 sums. scikit-image sums in float64 and rounds to float32; the values differ
    by up to ~3e-6 (scikit-image's float32 SSIM is itself ~3e-7 from its float64 one). NumPy
    releases the GIL in each operation, so the pairs can be spread over threads. Timings:
    ``bench/RESULTS.md``, "Moved from docstrings"."""

    WIN = 7

    def __init__(self, ref: torch.Tensor):
        self.ref = np.ascontiguousarray(ref.float().cpu().numpy())  # (K, H, W)
        K, H, W = self.ref.shape
        if min(H, W) < self.WIN:
            raise SpecError(f"SSIM needs maps of at least {self.WIN} x {self.WIN} pixels (got {H} x {W})",
                            param="images")
        self.mean = np.empty((K, H - 6, W - 6), np.float32)
        self.var = np.empty_like(self.mean)  # E[x^2] - E[x]^2, before the sample-covariance factor
        box, sq = _Box7(H, W), np.empty((H, W), np.float32)
        for i, a in enumerate(self.ref):
            box(a, self.mean[i])
            box(np.multiply(a, a, out=sq), self.var[i])
            self.var[i] -= self.mean[i] * self.mean[i]

    def _pairs(self, maps: np.ndarray, idx: range) -> list[float]:
        H, W = maps.shape[1:]
        n = float(self.WIN ** 2)
        cov, c1, c2 = np.float32(n / (n - 1)), np.float32(0.01 ** 2), np.float32(0.03 ** 2)
        box, prod = _Box7(H, W), np.empty((H, W), np.float32)
        uy, vy, vxy, num, den = (np.empty((H - 6, W - 6), np.float32) for _ in range(5))
        out = []
        for i in idx:
            b = maps[i]
            box(b, uy)
            box(np.multiply(b, b, out=prod), vy)
            box(np.multiply(self.ref[i], b, out=prod), vxy)
            ux, vx = self.mean[i], self.var[i]
            np.multiply(ux, uy, out=num)
            vxy -= num  # E[xy] - E[x]E[y]
            num *= 2
            num += c1  # 2 ux uy + C1
            vxy *= 2 * cov
            vxy += c2
            num *= vxy  # (2 ux uy + C1) (2 vxy + C2)
            np.multiply(uy, uy, out=uy)
            vy -= uy  # E[y^2] - E[y]^2
            np.multiply(ux, ux, out=den)
            den += uy
            den += c1
            vy += vx
            vy *= cov
            vy += c2
            den *= vy  # (ux^2 + uy^2 + C1) (vx + vy + C2)
            num /= den
            out.append(float(num.sum(dtype=np.float64)) / num.size)
        return out

    def __call__(self, maps: torch.Tensor, workers: int = 1) -> torch.Tensor:
        """SSIM of ``maps[i]`` with reference ``i``, for ``maps (K, H, W)`` in [0, 1]."""
        m = np.ascontiguousarray(maps.float().cpu().numpy())
        K = len(m)
        workers = max(1, min(workers, K))
        if workers == 1:
            return torch.tensor(self._pairs(m, range(K)), dtype=torch.float32)
        parts = [range(k * K // workers, (k + 1) * K // workers) for k in range(workers)]
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(lambda r: self._pairs(m, r), parts))
        return torch.tensor([v for d in done for v in d], dtype=torch.float32)


def ssim(a: torch.Tensor, b: torch.Tensor, workers: int | None = None) -> torch.Tensor:
    """SSIM of each pair of maps ``(K, H, W)`` in [0, 1] (scikit-image's, data range 1: :class:`SSIM`),
    the pairs spread over ``workers`` threads (default: as many as torch uses)."""
    return SSIM(b)(a, workers=workers or torch.get_num_threads())


class _Compare:
    """Spearman (on maps average-pooled to at most :data:`RANK_SIDE` a side) and SSIM of stage maps
    ``(M, N, T, H, W)`` with the original model's (stage 0). The SSIM runs in NumPy only (no
    torch operation, so no second OpenMP team), which lets it run on a thread beside the next
    stage's explain passes; the Spearman is torch work, done on the caller's thread."""

    def __init__(self, ref: torch.Tensor):
        self.ref = ref
        H, W = ref.shape[-2:]
        # ranks on pooled maps: a CAM is a bilinear upsample of a ~7 x 7 map, finer ranks are
        # interpolation, and sorting 224 x 224 maps dominated the cost
        self.k = max(1, math.ceil(max(H, W) / RANK_SIDE))
        self.ref_ranks = average_ranks(self.small(ref))
        self._ssim: SSIM | None = None  # the references' SSIM statistics, made at the first use

    def small(self, maps: torch.Tensor) -> torch.Tensor:
        """``(maps.numel() / (H*W), P)``: the maps pooled for ranking."""
        H, W = maps.shape[-2:]
        return F.avg_pool2d(maps.reshape(-1, 1, H, W), self.k, ceil_mode=True).flatten(1)

    def spearman(self, small: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Spearman of pooled maps (:meth:`small`; any number of stages stacked) with the reference's."""
        K = self.ref_ranks.shape[0]
        ref_ranks = self.ref_ranks.repeat(small.shape[0] // K, 1)
        return spearman(small, ref_ranks=ref_ranks).view(*shape)

    def ssim(self, maps: torch.Tensor, workers: int = 1) -> torch.Tensor:
        H, W = maps.shape[-2:]
        if self._ssim is None:
            self._ssim = SSIM(self.ref.reshape(-1, H, W))
        return self._ssim(maps.reshape(-1, H, W), workers=workers).view(maps.shape[:-2])


@dataclass(eq=False)
class Sanity(View):
    """Correlation of each method's maps with the original model's, per randomisation stage.

    Attributes:
        methods: the methods, the control ``edge`` last (``M``).
        stages: ``["original", <top group>, ..., <all>]``, the group randomised last at each stage
            (``S``).
        spearman: ``(M, S, N, T)`` Spearman rank correlations with the original maps.
        ssim: ``(M, S, N, T)`` structural similarities with the original maps.
        maps: ``(M, S, N, T, H, W)`` maps on the model's input grid (CPU, float16).
        images: the images' names (``N``).
    """

    methods: list[str]
    stages: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor
    maps: torch.Tensor
    images: list[str]
    model_name: str = "model"
    layer: str = ""

    def __repr__(self) -> str:
        return f"Sanity({', '.join(self.methods)}; stages={len(self.stages)}; images={len(self.images)})"

    def rows(self) -> list[dict[str, Any]]:
        """One row per method x stage: the mean Spearman and SSIM over images and targets."""
        return [{"method": m, "stage": s, "randomised": self.stages[s],
                 "spearman": float(self.spearman[k, s].mean()), "ssim": float(self.ssim[k, s].mean())}
                for k, m in enumerate(self.methods) for s in range(len(self.stages))]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model_name, "layer": self.layer, "methods": list(self.methods),
                "stages": list(self.stages), "images": list(self.images), "rows": self.rows()}

    def curves_figure(self) -> Image.Image:
        fig = agg_figure((10, 3.6))
        axes = fig.subplots(1, 2)
        xs = np.arange(len(self.stages))
        for ax, key, vals in ((axes[0], "Spearman rank correlation", self.spearman), (axes[1], "SSIM", self.ssim)):
            for k, m in enumerate(self.methods):
                ax.plot(xs, vals[k].flatten(1).mean(1).numpy(), "--" if m in CONTROLS else "-o", markersize=3, label=m)
            ax.set_xticks(xs)
            ax.set_xticklabels(self.stages, rotation=60, ha="right", fontsize=7)
            ax.set_ylabel(key)
            ax.set_ylim(-0.3 if key.startswith("Spearman") else -0.05, 1.05)
            ax.axhline(0, color="0.6", linewidth=0.8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0].set_title("randomised from the top down (left: original)", fontsize=9)
        fig.tight_layout()
        return figure_image(fig)

    def maps_figure(self, image: int = 0, cmap: str = "jet") -> Image.Image:
        """Methods (rows) x stages (columns) maps of one image (first target)."""
        rows = [[Image.fromarray(colorize(self.maps[k, s, image, 0].float(), 0.0, 1.0, cmap))
                 for s in range(len(self.stages))] for k in range(len(self.methods))]
        return grid(rows, row_titles=list(self.methods), col_titles=list(self.stages), cell=96,
                    title=f"{self.images[image]}: maps as the model is randomised")

    def figure(self, **opts: Any) -> Image.Image:
        return titled(self.curves_figure(), f"sanity check (cascading randomisation) - {self.model_name}",
                      "a faithful method's maps should change (fall towards 0) as the model is randomised; "
                      "edge is a model-independent control")

    def save(self, out_dir: str | os.PathLike, **opts: Any) -> Saved:
        """``sanity.json`` (role ``json``), ``sanity.csv`` (role ``csv``), ``sanity.png`` (role ``figure``)
        and ``maps_<i>.png`` per image (role ``maps``)."""
        out = OutDir(out_dir)
        out.json("json", "sanity.json", self.to_dict())
        lines = ["method,stage,randomised,spearman,ssim"] + [
            f"{r['method']},{r['stage']},{r['randomised']},{r['spearman']:.6g},{r['ssim']:.6g}" for r in self.rows()]
        out.text("csv", "sanity.csv", "\n".join(lines) + "\n")
        out.png("figure", "sanity.png", self.figure())
        for i in range(len(self.images)):
            out.png("maps", f"maps_{i}.png", self.maps_figure(i))
        return out.saved()


def sanity(model: Any, images: Any, method: str | Sequence[str] = "gradcam,gradcam++", target: Any = None,
           layer: Any = None, *, seed: int = 0, batch_size: int = 32) -> Sanity:
    """Check that heatmaps depend on the model: explain, randomise the layers from the top down one
    stage at a time, explain again after each, and compare each map with the original's.

    A method whose maps barely change as the weights become noise is showing the image (edges,
    contrast), not what the model learned (Adebayo et al. 2018; the protocol is in the module doc).
    The model is restored afterwards, bitwise, also when something fails.

    Args:
        model: anything :func:`~convlens.models.load_model` takes; it needs parameterised layers.
        images: image paths, a folder, PIL images, arrays or an ``(N, 3, H, W)`` tensor.
        method: explanation methods as :func:`~convlens.lens.cam.explain` takes them; ``edge`` (a
            model-independent control whose maps never change) is always added.
        target: the classes to explain, as ``explain`` takes them; every stage explains the
            original model's targets, so the maps stay comparable.
        layer: the layer the CAMs read (default: the model's last convolutional stage).
        seed: seeds the re-initialisation, so a check repeats exactly.
        batch_size: images per forward/backward pass.

    Returns:
        Sanity: a view of the Spearman rank correlation and SSIM of each method's maps with the
            original ones, per stage, and the maps themselves.

    Raises:
        SpecError: an unknown method, or a model with no parameters to randomise.
        ConvlensError: a model, image, layer or target that cannot be resolved (the subclass names
            which).
    """
    lm = as_lens(model)
    real = [m for m in split_names(method) if m.lower() not in CONTROLS]
    methods = parse_methods(real) if real else parse_methods("gradcam")
    if not any(True for _ in lm.module.parameters()):
        raise SpecError(f"model {lm.name} has no parameters to randomise", param="model")
    groups = stage_groups(lm)
    if not groups:
        raise SpecError(f"model {lm.name} has no parameterised layers to randomise", param="model")
    x = prepare(lm, images)
    names = x.names
    batch = x.batch
    ex0 = explain(lm, batch, method=methods, target=target, layer=layer, batch_size=batch_size)
    layers = list(ex0.layers) or None
    # each image's own targets (N, T) at every stage: the stages explain what the original model did
    own_targets = torch.tensor([[s.index for s in row] for row in ex0.targets], dtype=torch.long)
    module = lm.module
    saved_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    g = torch.Generator().manual_seed(int(seed))
    ref = ex0.maps.float().cpu()  # (M, N, T, H, W)
    M, N, T, H, W = ref.shape
    S = len(groups) + 1
    # the result's maps, filled stage by stage (float16: stacking the float32 maps of every stage
    # at the end costs copies and page faults; bench/RESULTS.md, "Moved from docstrings")
    maps = torch.empty(M + len(CONTROLS), S, N, T, H, W, dtype=torch.float16)
    maps[:M, 0] = ref
    compare = _Compare(ref)
    pooled = [compare.small(ref)]
    # SSIM of a map with itself is exactly 1 (numerator and denominator agree in floating point)
    ssims = [torch.ones(M, N, T)]
    last = ref
    # each stage's SSIM (a small share of the CPU its passes take) runs on one thread
    # while the next stage is explained, in the CPU time the passes leave idle; the last stage's uses
    # every thread; the Spearman of all stages at once at the end (small, and torch work)
    pending = []
    try:
        with ThreadPoolExecutor(1) as pool:
            for i, (_, mods) in enumerate(reversed(groups)):
                randomise(mods, g)
                ex = explain(lm, batch, method=methods, target=own_targets, layer=layers, batch_size=batch_size)
                last = ex.maps.float().cpu()
                maps[:M, i + 1] = last
                pooled.append(compare.small(last))
                if i < len(groups) - 1:
                    pending.append(pool.submit(compare.ssim, last))
            ssims += [f.result() for f in pending]
    finally:
        for f in pending:
            f.cancel()
        module.load_state_dict(saved_state)
    ssims.append(compare.ssim(last, workers=torch.get_num_threads()))
    sp = compare.spearman(torch.cat(pooled), (S, M, N, T)).transpose(0, 1)  # (M, S, N, T)
    edge = edge_maps(batch).cpu()  # (N, H, W)
    maps[M:] = edge.view(1, 1, N, 1, H, W)
    e = edge.view(1, N, 1, H, W).expand(1, N, T, H, W)
    edge_compare = _Compare(e)
    edge_sp = edge_compare.spearman(edge_compare.small(e), (1, N, T))
    sp = torch.cat([sp, edge_sp.unsqueeze(1).expand(1, S, N, T)])
    # the model-independent control's maps never change: SSIM 1
    ss = torch.cat([torch.stack(ssims, 1), torch.ones(1, S, N, T)])
    stages = ["original", *[name for name, _ in reversed(groups)]]
    return Sanity(methods=[*methods, *CONTROLS], stages=stages, spearman=sp, ssim=ss, maps=maps,
                  images=names, model_name=lm.name, layer=ex0.layer)
