"""Can I trust this heatmap? ``score``: faithfulness and localisation metrics per method, with baselines.

``score(model, images, method, metric, target, layer, boxes)`` explains the images once (all methods
from one :func:`~convlens.lens.cam.explain`), adds two trivial maps scored as if they were methods,
and runs every metric on every image x target x method, batched over all of them at once
(:mod:`convlens.lens.faithfulness`). The result is a :class:`Scores` (a :class:`~convlens.view.View`).

Baselines (methods named so in every table):

- ``random``: uniform noise in [0, 1], **smoothed**: one value per 32 x 32 block of the input (a
  CAM's resolution) bilinearly upsampled, seeded by ``seed`` (see :func:`random_maps`);
- ``centre``: a Gaussian centred on the input grid, standard deviation a quarter of its shorter side.

Metrics (``metric="deletion,insertion,..."``; the protocols in :mod:`convlens.lens.faithfulness`):

- ``deletion`` / ``insertion``: RISE AUC of the target's softmax probability, ``steps`` intervals,
  deleted pixels set to 0 in the normalised space (the dataset mean), insertion from a Gaussian
  blur (sigma 10 px) as RISE does; lower deletion and higher insertion are better;
- ``avgdrop`` / ``increase``: Average Drop % and Increase in Confidence % (Grad-CAM++), the input
  multiplied by its map; lower drop, higher increase are better;
- ``road-morf`` / ``road-lerf``: ROAD, mean over the removed fractions 0.1, 0.3, 0.5, 0.7, 0.9 of
  p_imputed - p (noisy linear imputation); ``fraction`` is the share REMOVED in both orders (see
  faithfulness.py for pytorch-grad-cam's opposite convention); MoRF lower, LeRF higher is better;
  ``road``: the combined mean((LeRF - MoRF) / 2) over the same fractions, higher is better;
- ``pointing``: 1 if the map's peak lies inside a box of the target (within ``tolerance`` pixels of
  the original picture, as TorchRay's pointing game), else 0; ``energy``: the share of the map's
  mass inside the boxes (energy-based pointing game, Score-CAM). Both need ``boxes``.

Boxes are in original-image pixels ``[x0, y0, x1, y1]`` (x to the right, y down; x1/y1 exclusive),
mapped onto the model's input grid through the preprocessing geometry (``config.crop_box``):
a dict / JSON file ``{"image.png": [[x0, y0, x1, y1], ...]}`` (for every target), or per target
``{"image.png": {"243": [[...]], "tabby cat": [[...]], "*": [[...]]}}`` (``"*"``: every target), or a CSV file with the columns
``image,x0,y0,x1,y1`` and optionally ``target``. Images are matched by path or file name.

Regions may also be **mask images** (any picture the size of its image; non-zero pixels are the
object, alpha respected): a folder of masks named after the images (``masks/cat.png`` for
``cat.jpg``: matched by path, file name, then stem), or a path instead of a box list in the JSON
(``{"cat.jpg": "masks/cat.png"}``, ``{"both.png": {"243": "dog.png", "282": "cat.png"}}``; relative
to the JSON file). An input pixel is inside a mask when the original pixel under its centre is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from ..errors import ConvlensError, SpecError, closest
from ..images import list_images, load_image
from ..models.lensmodel import LensModel
from ..options import ScoreOptions, check_options
from ..render.colors import colorize, font
from ..render.figures import agg_figure, figure_image
from ..render.files import OutDir, Saved, unique_stems
from ..render.grid import titled
from ..view import View
from . import faithfulness as fa
from .cam import explain
from .cam.layers import as_lens
from .cam.targets import parse_methods
from .cam.verb import prepare

#: every metric, in table order
METRICS = ("deletion", "insertion", "avgdrop", "increase", "road-morf", "road-lerf", "road", "pointing", "energy")
#: the metrics where a higher value is better
HIGHER_BETTER = {"insertion", "increase", "road-lerf", "road", "pointing", "energy"}
#: metrics that need boxes
NEEDS_BOXES = {"pointing", "energy"}
#: the trivial maps scored beside the methods
BASELINES = ("random", "centre")
#: ROAD's removed fractions
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
_ALIASES = {"center": "centre", "drop": "avgdrop", "average-drop": "avgdrop", "morf": "road-morf",
            "lerf": "road-lerf", "pointing-game": "pointing", "ebpg": "energy"}


def parse_metrics(metric: str | Sequence[str]) -> list[str]:
    """Metric names from ``"deletion,insertion"`` or a list; unknown names fail with the closest."""
    items = metric.split(",") if isinstance(metric, str) else [str(m) for p in metric for m in str(p).split(",")]
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower().replace("_", "-")
        if not name:
            continue
        if name == "all":
            out.extend(m for m in METRICS if m not in out)
            continue
        name = _ALIASES.get(name, name)
        if name not in METRICS:
            raise SpecError(f"unknown metric {raw.strip()!r}{closest(name, METRICS)} "
                            f"(metrics: {', '.join(METRICS)})", param="metric")
        if name not in out:
            out.append(name)
    if not out:
        raise SpecError(f"metric is empty (metrics: {', '.join(METRICS)})", param="metric")
    return out


def split_methods(method: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """(explanation methods, baselines) of a method request; the baselines are always both."""
    items = method.split(",") if isinstance(method, str) else [str(m) for p in method for m in str(p).split(",")]
    real = [m.strip() for m in items if m.strip() and _ALIASES.get(m.strip().lower(), m.strip().lower()) not in BASELINES]
    return (parse_methods(real) if real else []), list(BASELINES)


# -- baselines ------------------------------------------------------------------------------

def random_maps(shape: Sequence[int], seed: int = 0, device: Any = "cpu", cell: int = 32) -> torch.Tensor:
    """Smoothed uniform noise maps in [0, 1] of ``shape (..., H, W)``, from ``seed``: one uniform value
    per ``cell`` x ``cell`` block (a CAM's resolution for a stride-32 network), bilinearly upsampled.

    Smoothed on purpose: unsmoothed per-pixel noise deletes scattered single pixels, which wrecks any
    input quickly and makes a random map look better at deletion than any real map."""
    *lead, H, W = (int(v) for v in shape)
    g = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand((int(np.prod(lead)) if lead else 1, 1, max(1, math.ceil(H / cell)), max(1, math.ceil(W / cell))),
                        generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    return up.view(*lead, H, W).to(device)


def centre_map(height: int, width: int, device: Any = "cpu") -> torch.Tensor:
    """A Gaussian centred on the grid, sigma a quarter of the shorter side, peak 1."""
    sigma = min(height, width) / 4
    ys = torch.arange(height, dtype=torch.float32, device=device) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float32, device=device) + 0.5 - width / 2
    return torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))


# -- boxes ----------------------------------------------------------------------------------

Boxes = dict[str, Any]  # image key -> list of regions, or {target: list of regions}


@dataclass(frozen=True, eq=False)
class RegionMask:
    """An object's region as a mask image in original pixels: ``inside`` is ``(h, w)`` bool."""

    inside: np.ndarray
    source: str

    def __repr__(self) -> str:
        return f"RegionMask({self.source!r}, {self.inside.shape[1]}x{self.inside.shape[0]})"


def read_mask(path: Any) -> RegionMask:
    """A mask image (non-zero pixels, or opaque ones when it has alpha, are the object)."""
    try:
        img = load_image(path, mode=None)
    except ConvlensError as e:
        raise SpecError(f"boxes: mask {e}", param="boxes") from None
    arr = np.asarray(img.convert("RGBA") if img.mode in ("RGBA", "LA", "PA") else img.convert("L"))
    inside = arr[..., 3] > 0 if arr.ndim == 3 else arr > 0
    if arr.ndim == 3:
        inside &= arr[..., :3].max(-1) > 0
    if not inside.any():
        raise SpecError(f"boxes: mask {path} is empty (no non-zero pixel)", param="boxes")
    return RegionMask(inside, str(path))


def _region(b: Any, where: str, root: Path | None) -> list[float] | RegionMask:
    if isinstance(b, RegionMask):
        return b
    if isinstance(b, (str, os.PathLike)) and root is not None:
        if not os.path.isfile(root / b):  # (False, not OSError, for a name too long)
            raise SpecError(f"boxes: {where}: expected a list of [x0, y0, x1, y1] or a mask image file ({b} does "
                            "not exist)", param="boxes")
        return read_mask(root / b)
    return _check_box(b, where)


def _regions(val: Any, where: str, root: Path | None) -> list[list[float] | RegionMask]:
    if isinstance(val, RegionMask) or (isinstance(val, (str, os.PathLike)) and root is not None):
        return [_region(val, where, root)]
    if isinstance(val, (list, tuple)):
        if len(val) == 4 and all(isinstance(v, (int, float)) for v in val):
            val = [val]  # one box given bare
        return [_region(b, where, root) for b in val]
    raise SpecError(f"boxes: {where}: expected a list of [x0, y0, x1, y1] or a mask image (got "
                    f"{type(val).__name__})", param="boxes")


def _check_box(b: Any, where: str) -> list[float]:
    try:
        vals = [float(v) for v in b]
    except (TypeError, ValueError):
        raise SpecError(f"boxes: {where}: a box is [x0, y0, x1, y1] (got {b!r})", param="boxes") from None
    except OverflowError:  # an int beyond float range (10**400)
        raise SpecError(f"boxes: {where}: a box has a number too large for a float", param="boxes") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise SpecError(f"boxes: {where}: a box is four numbers [x0, y0, x1, y1] (got {b!r})", param="boxes")
    if vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise SpecError(f"boxes: {where}: box {b!r} is empty (x1 must exceed x0 and y1 exceed y0)", param="boxes")
    return vals


def load_boxes(boxes: Any) -> Boxes:
    """Regions from a dict, a JSON or CSV file, or a folder of mask images (see the module doc),
    checked for shape; mask paths in a JSON file are read relative to it."""
    if boxes is None:
        return {}
    root: Path | None = None
    csv_rows = False
    if isinstance(boxes, (str, os.PathLike)):
        path = Path(boxes)
        if os.path.isdir(path):  # (os.path: False, not OSError, for a name too long)
            try:
                found = list_images([path])
            except ConvlensError:
                found = []
            if not found:
                raise SpecError(f"boxes folder {boxes} holds no mask image", param="boxes")
            return {str(p.relative_to(path)): [read_mask(p)] for p in found}
        if not os.path.isfile(path):
            raise SpecError(f"boxes file {boxes} does not exist", param="boxes")
        root = path.parent
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise SpecError(f"boxes file {boxes} cannot be read ({e.strerror or e})", param="boxes") from None
        if path.suffix.lower() == ".csv":
            try:
                rows = list(csv.DictReader(io.StringIO(text)))
            except csv.Error as e:  # a field over csv's size limit...
                raise SpecError(f"boxes file {boxes} is not a readable CSV ({e})", param="boxes") from None
            need = {"image", "x0", "y0", "x1", "y1"}
            if not rows or not need <= set(rows[0]):
                raise SpecError(f"boxes file {boxes}: a CSV needs the columns image,x0,y0,x1,y1 (and optionally "
                                "target)", param="boxes")
            out: Boxes = {}
            for r in rows:
                b = [r["x0"], r["y0"], r["x1"], r["y1"]]
                out.setdefault(r["image"], {}).setdefault((r.get("target") or "").strip() or "*", []).append(b)
            boxes = {k: (v["*"] if set(v) == {"*"} else v) for k, v in out.items()}
            csv_rows, root = True, None  # CSV cells are numbers, never mask paths
        else:
            try:
                boxes = json.loads(text)
            except json.JSONDecodeError as e:
                raise SpecError(f"boxes file {boxes} is not valid JSON ({e.msg}, line {e.lineno})",
                                param="boxes") from None
            except (ValueError, RecursionError):  # a number of over 4300 digits, nesting too deep
                raise SpecError(f"boxes file {boxes} is not JSON that can be read (a number too long or "
                                "lists nested too deep)", param="boxes") from None
    if not isinstance(boxes, dict):
        raise SpecError('boxes must map image names to lists of [x0, y0, x1, y1] ({"image.png": [[...]]})',
                        param="boxes")
    if root is None and not csv_rows:
        root = Path(".")  # mask paths given in a dict are relative to the working directory
    out = {}
    for key, val in boxes.items():
        if isinstance(val, dict):
            out[str(key)] = {str(t): _regions(bs or [], f"{key} target {t}", root) for t, bs in val.items()}
        else:
            out[str(key)] = _regions(val, str(key), root)
    return out


def match_boxes(boxes: Boxes, names: Sequence[str]) -> list[Any]:
    """Each image's boxes entry (by path, then file name), or None; unknown keys fail."""
    by_path = {str(Path(n)): i for i, n in enumerate(names)}
    by_name: dict[str, int] = {}
    by_stem: dict[str, int] = {}
    for i, n in enumerate(names):
        by_name.setdefault(Path(n).name, i)
        by_stem.setdefault(Path(n).stem, i)
    found: list[Any] = [None] * len(names)
    for key, val in boxes.items():
        i = by_path.get(str(Path(key)), by_name.get(Path(key).name, by_stem.get(Path(key).stem)))
        if i is None:
            known = [Path(n).name for n in names]
            raise SpecError(f"boxes given for {key!r}, which is not among the images{closest(Path(key).name, known)}",
                            param="boxes")
        found[i] = val
    return found


def _target_boxes(entry: Any, index: int, label: str, image: str) -> list[list[float]] | None:
    if entry is None:
        return None
    if isinstance(entry, list):
        return entry
    found = list(entry.get("*", []))  # boxes for every target ("*", or a CSV row without a target)
    for key, bs in entry.items():
        k = key.strip().lower()
        if k == str(index) or k == label.lower() or k == label.split(",")[0].strip().lower():
            found.extend(bs)
    return found or None


def _grid(config: Any, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Original x of each input column, original y of each input row (pixel centres)."""
    w0, h0 = size
    x0c, y0c, x1c, y1c = config.crop_box(w0, h0)
    H, W = config.height, config.width
    ox = x0c + (torch.arange(W, dtype=torch.float64) + 0.5) * (x1c - x0c) / W
    oy = y0c + (torch.arange(H, dtype=torch.float64) + 0.5) * (y1c - y0c) / H
    return ox, oy


def _sample(a: np.ndarray, ox: torch.Tensor, oy: torch.Tensor) -> torch.Tensor:
    """``a`` (h, w) in original pixels read at the input grid (the pixel under each centre)."""
    cols = ox.floor().long().clamp(0, a.shape[1] - 1)
    rows = oy.floor().long().clamp(0, a.shape[0] - 1)
    return torch.from_numpy(np.ascontiguousarray(a))[rows[:, None], cols[None, :]]


def _check_mask_size(m: RegionMask, size: tuple[int, int], image: str) -> None:
    if (m.inside.shape[1], m.inside.shape[0]) != tuple(size):
        raise SpecError(f"boxes: {image}: mask {m.source} is {m.inside.shape[1]} x {m.inside.shape[0]} pixels, the "
                        f"image {size[0]} x {size[1]}", param="boxes")


def box_mask(config: Any, size: tuple[int, int], boxes: list[Any], image: str) -> torch.Tensor:
    """``(H, W)`` bool mask on the model's input grid of regions in original pixels (``size`` = (w, h)).

    An input pixel is inside when its centre, mapped back to the original picture through
    ``config.crop_box``, lies inside a box (x with the width, y with the height) or on a mask pixel."""
    w0, h0 = size
    ox, oy = _grid(config, size)
    mask = torch.zeros(config.height, config.width, dtype=torch.bool)
    for b in boxes:
        if isinstance(b, RegionMask):
            _check_mask_size(b, size, image)
            inside = _sample(b.inside, ox, oy)
            what = f"mask {b.source}"
        else:
            x0, y0, x1, y1 = b
            if x0 < 0 or y0 < 0 or x1 > w0 or y1 > h0:
                raise SpecError(f"boxes: {image}: box {[round(v, 2) for v in b]} lies outside the image "
                                f"({w0} x {h0} pixels, x < {w0}, y < {h0})", param="boxes")
            inside = ((oy >= y0) & (oy < y1))[:, None] & ((ox >= x0) & (ox < x1))[None, :]
            what = f"box {[round(v, 2) for v in b]}"
        if not bool(inside.any()):
            raise SpecError(f"boxes: {image}: {what} lies where the model's crop cut the picture off", param="boxes")
        mask |= inside
    return mask


def pointing_energy(maps: torch.Tensor, masks: torch.Tensor, centres: tuple[torch.Tensor, torch.Tensor],
                    dist: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hit (K,), energy (K,))`` of maps ``(K, H, W)`` against masks ``(K, H, W)``.

    ``dist`` ``(K, H, W)``: each input pixel's distance (original pixels) to the nearest box; a hit
    is a peak with ``dist <= tolerance`` (the caller folds the tolerance in: ``dist`` 0 inside)."""
    flat = maps.flatten(1).float()
    peak = flat.argmax(1)
    if dist is None:
        hit = masks.flatten(1).gather(1, peak[:, None])[:, 0].float()
    else:
        hit = dist.flatten(1).gather(1, peak[:, None])[:, 0].le(0).float()
    energy = (flat * masks.flatten(1).float()).sum(1) / flat.sum(1).clamp_min(1e-12)
    return hit, energy


def box_distance(config: Any, size: tuple[int, int], boxes: list[Any]) -> torch.Tensor:
    """``(H, W)``: distance in original pixels from each input pixel's centre to the nearest region."""
    ox, oy = _grid(config, size)
    best = torch.full((config.height, config.width), float("inf"), dtype=torch.float64)
    for b in boxes:
        if isinstance(b, RegionMask):
            d = _sample(ndimage.distance_transform_edt(~b.inside), ox, oy).double()
        else:
            x0, y0, x1, y1 = b
            dx = (x0 - ox).clamp_min(0) + (ox - x1).clamp_min(0)
            dy = (y0 - oy).clamp_min(0) + (oy - y1).clamp_min(0)
            d = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        best = torch.minimum(best, d)
    return best


# -- statistics ------------------------------------------------------------------------------

def bootstrap(values: np.ndarray, seed: int = 0, resamples: int = 2000, level: float = 0.95
              ) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile bootstrap interval (seeded)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


# -- the result --------------------------------------------------------------------------------

@dataclass(eq=False)
class Scores(View):
    """Per image x target x method x metric values, curves and a leaderboard.

    Attributes:
        methods: the methods scored, the baselines ``random`` and ``centre`` last (``M``).
        metrics: the metrics, canonical names.
        values: ``{metric: (M, N, T) tensor}`` per method x image x target.
        images: the images' names (``N``).
        targets: the class explained per image x target (``T``), as ``ClassScore``.
        fractions: ``(S,)`` the deleted/inserted fractions of the curves.
        curves: ``{"deletion"|"insertion": (M, N, T, S)}`` the probability along the fractions.
        road_curves: ``{"morf"|"lerf": (M, N, T, F)}`` over :data:`ROAD_FRACTIONS`.
        has_boxes: ``(N, T)`` bool, which items had boxes (the box metrics average over those).
    """

    methods: list[str]
    metrics: list[str]
    values: dict[str, torch.Tensor]
    images: list[str]
    targets: list[list[Any]]  # ClassScore per image x target
    model_name: str = "model"
    layer: str = ""
    steps: int = 20
    seed: int = 0
    tolerance: float = 0.0
    fractions: torch.Tensor | None = None
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    road_curves: dict[str, torch.Tensor] = field(default_factory=dict)
    has_boxes: torch.Tensor | None = None  # (N, T) bool: which items had boxes

    def __repr__(self) -> str:
        return f"Scores({', '.join(self.methods)}; {', '.join(self.metrics)}; images={len(self.images)})"

    # -- tables --------------------------------------------------------------
    def item_values(self, metric: str, k: int) -> np.ndarray:
        """The values of method ``k`` for ``metric`` over the items that have one."""
        v = self.values[metric][k].flatten().double().numpy()
        if metric in NEEDS_BOXES and self.has_boxes is not None:
            v = v[self.has_boxes.flatten().numpy()]
        return v

    def summary(self) -> list[dict[str, Any]]:
        """One row per method x metric: mean, 95% bootstrap interval (seeded), n items."""
        rows = []
        for metric in self.metrics:
            for k, m in enumerate(self.methods):
                v = self.item_values(metric, k)
                mean, lo, hi = bootstrap(v, seed=self.seed)
                rows.append({"method": m, "metric": metric, "mean": mean, "low": lo, "high": hi,
                             "n": int(np.isfinite(v).sum())})
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """One row per image x target x method x metric."""
        out = []
        for i, name in enumerate(self.images):
            for t, s in enumerate(self.targets[i]):
                for k, m in enumerate(self.methods):
                    for metric in self.metrics:
                        if metric in NEEDS_BOXES and self.has_boxes is not None and not bool(self.has_boxes[i, t]):
                            continue
                        out.append({"image": name, "target": int(s.index), "method": m, "metric": metric,
                                    "value": float(self.values[metric][k, i, t])})
        return out

    def ranking(self, metric: str | None = None) -> list[str]:
        """Methods from best to worst by the mean of ``metric`` (default: the first)."""
        metric = metric or self.metrics[0]
        means = {r["method"]: r["mean"] for r in self.summary() if r["metric"] == metric}
        sign = -1 if metric in HIGHER_BETTER else 1
        return sorted(self.methods, key=lambda m: (math.inf if means[m] != means[m] else sign * means[m]))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model_name, "layer": self.layer, "methods": list(self.methods),
            "baselines": [m for m in self.methods if m in BASELINES], "metrics": list(self.metrics),
            "higher_is_better": {m: m in HIGHER_BETTER for m in self.metrics},
            "steps": self.steps, "seed": self.seed, "tolerance": self.tolerance,
            "summary": self.summary(), "images": self.rows(),
        }
        if self.fractions is not None and self.curves:
            d["curves"] = {"fractions": [float(f) for f in self.fractions],
                           **{c: {m: [float(v) for v in self.curves[c][k].flatten(0, 1).mean(0)]
                                  for k, m in enumerate(self.methods)} for c in self.curves}}
        if self.road_curves:
            d["road_fractions"] = list(ROAD_FRACTIONS)
        return d

    # -- pictures ------------------------------------------------------------
    def curves_figure(self) -> Image.Image | None:
        """Mean deletion and insertion curves per method (the baselines dashed), or None."""
        if self.fractions is None or not self.curves:
            return None
        names = [c for c in ("deletion", "insertion") if c in self.curves]
        fig = agg_figure((4.2 * len(names), 3.3))
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        fr = self.fractions.numpy()
        for ax, c in zip(axes, names):
            for k, m in enumerate(self.methods):
                y = self.curves[c][k].flatten(0, 1).mean(0).numpy()
                a = float(np.trapezoid(y, fr)) if hasattr(np, "trapezoid") else float(np.trapz(y, fr))
                ax.plot(fr, y, "--" if m in BASELINES else "-", label=f"{m} (AUC {a:.3f})", linewidth=1.6)
            ax.set_xlabel("fraction of pixels " + ("deleted" if c == "deletion" else "inserted"))
            ax.set_ylabel("target probability")
            ax.set_title(c + (" (lower AUC is better)" if c == "deletion" else " (higher AUC is better)"), fontsize=10)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        return figure_image(fig)

    def table_image(self) -> Image.Image:
        """The leaderboard: methods (best first by the first metric) x metrics, mean [low, high],
        each cell tinted by its rank in its column (green best, red worst)."""
        summ = {(r["method"], r["metric"]): r for r in self.summary()}
        order = self.ranking()
        f, fb = font(13), font(13, bold=True)
        cw, first, rh, pad = 150, 110, 24, 6
        W = first + cw * len(self.metrics) + 2 * pad
        H = rh * (len(order) + 1) + 2 * pad
        img = Image.new("RGB", (W, H), (255, 255, 255))
        d = ImageDraw.Draw(img)
        d.text((pad + 4, pad + 4), "method", fill=(30, 30, 30), font=fb)
        for j, metric in enumerate(self.metrics):
            arrow = "\u2191" if metric in HIGHER_BETTER else "\u2193"
            d.text((pad + first + j * cw + 4, pad + 4), f"{metric} {arrow}", fill=(30, 30, 30), font=fb)
        for j, metric in enumerate(self.metrics):
            means = np.array([summ[(m, metric)]["mean"] for m in order], dtype=np.float64)
            ok = np.where(np.isfinite(means), means, np.nan)
            rank = np.argsort(np.argsort(-ok if metric in HIGHER_BETTER else ok))
            t = rank / max(1, len(order) - 1)
            colours = colorize(np.asarray(0.25 + 0.5 * (1 - t)), 0.0, 1.0, "RdYlGn")
            for r, m in enumerate(order):
                x, y = pad + first + j * cw, pad + rh * (r + 1)
                rgb = tuple(int(v) for v in colours[r])
                tint = tuple(int(255 - 0.45 * (255 - v)) for v in rgb)
                d.rectangle([x, y, x + cw - 2, y + rh - 2], fill=tint)
                s = summ[(m, metric)]
                text = "-" if s["mean"] != s["mean"] else f"{s['mean']:.3f} [{s['low']:.2f}, {s['high']:.2f}]"
                d.text((x + 4, y + 4), text, fill=(20, 20, 20), font=f)
        for r, m in enumerate(order):
            d.text((pad + 4, pad + rh * (r + 1) + 4), m, fill=(110, 110, 110) if m in BASELINES else (20, 20, 20),
                   font=fb if r == 0 else f)
        return img

    def figure(self, **opts: Any) -> Image.Image:
        """The curves per method (when deletion/insertion were scored) above the leaderboard table."""
        table = self.table_image()
        curves = self.curves_figure()
        n = len(self.images)
        title = f"how faithful is each map - {self.model_name}" + (f", layer {self.layer}" if self.layer else "")
        sub = f"{n} image{'s' if n != 1 else ''}; mean [95% bootstrap interval]; baselines: random, centre"
        if curves is None:
            return titled(table, title, sub)
        return titled(curves, title, sub, footer=table)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{m}</th>" for m in self.metrics)
        summ = {(r["method"], r["metric"]): r for r in self.summary()}
        body = "".join("<tr><td>" + m + "</td>" + "".join(
            f"<td>{summ[(m, x)]['mean']:.3f} [{summ[(m, x)]['low']:.3f}, {summ[(m, x)]['high']:.3f}]</td>"
            for x in self.metrics) + "</tr>" for m in self.ranking())
        return f"<table><tr><th>method</th>{head}</tr>{body}</table>"

    # -- files -----------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike, **opts: Any) -> Saved:
        """``summary.json`` (role ``json``: :meth:`to_dict`), ``scores.png`` (role ``figure``),
        ``images/<stem>.csv`` per image (role ``csv``: target, method, metric, value) and, with
        deletion/insertion, ``curves/<stem>.csv`` (role ``curves``: target, method, curve, fraction,
        probability)."""
        out = OutDir(out_dir)
        out.json("json", "summary.json", self.to_dict())
        out.png("figure", "scores.png", self.figure())
        rows = self.rows()
        stems = unique_stems(self.images)
        for i, (name, stem) in enumerate(zip(self.images, stems)):
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["image", "target", "method", "metric", "value"])
            for r in rows:
                if r["image"] == name:
                    w.writerow([name, r["target"], r["method"], r["metric"], f"{r['value']:.6g}"])
            path = out.text("csv", f"images/{stem}.csv", buf.getvalue())
            rec: dict[str, Any] = {"image": name, "csv": str(path)}
            if self.curves and self.fractions is not None:
                buf = io.StringIO()
                w = csv.writer(buf)
                w.writerow(["image", "target", "method", "curve", "fraction", "probability"])
                for c, cv in self.curves.items():
                    for k, m in enumerate(self.methods):
                        for t, s in enumerate(self.targets[i]):
                            for f, p in zip(self.fractions.tolist(), cv[k, i, t].tolist()):
                                w.writerow([name, s.index, m, c, f"{f:.6g}", f"{p:.6g}"])
                rec["curves"] = str(out.text("curves", f"curves/{stem}.csv", buf.getvalue()))
            out.record(**rec)
        return out.saved()


# -- the verb ------------------------------------------------------------------------------------

def check_settings(metric: Any = "deletion,insertion", steps: int = 20, tolerance: float = 0.0,
                   batch_size: int = fa.FORWARD_BATCH) -> list[str]:
    """The cheap checks of :func:`score`'s settings, done before any model loads (the CLI calls it
    first so that a typo fails in a second, not after the model is built).

    Args:
        metric: the metric names (comma-separated or a list, or ``"all"``).
        steps: deletion/insertion intervals, 1 to :data:`~convlens.options.MAX_STEPS` (one step
            compares the whole image with the all-baseline one).
        tolerance: the pointing game's slack, in pixels.
        batch_size: perturbed inputs per forward pass.

    Returns:
        list[str]: the metric names, canonical and without repeats.

    Raises:
        SpecError: an unknown metric or a setting outside the bounds of
            :class:`convlens.options.ScoreOptions`, naming the parameter.
    """
    metrics = parse_metrics(metric)
    check_options(ScoreOptions, steps=steps, tolerance=tolerance, batch_size=batch_size)
    return metrics


def score(model: Any, images: Any, method: str | Sequence[str] = "gradcam",
          metric: str | Sequence[str] = "deletion,insertion", target: Any = None, layer: Any = None,
          boxes: Any = None, *, steps: int = 20, tolerance: float = 0.0, batch_size: int | None = None, seed: int = 0,
          progress: Callable[[int, int], None] | None = None) -> Scores:
    """Score each method's maps (and the ``random`` and ``centre`` baselines) with each metric.

    A heatmap can look plausible and still say little about the model; the metrics ask the model
    itself (does deleting the highlighted pixels lower the score?) or the annotation (does the peak
    land on the object?), and the baselines show what a map with no knowledge of the model gets.

    Args:
        model: anything :func:`~convlens.models.load_model` takes (a name, a checkpoint, a run
            directory, a ``torch.nn.Module``, a ``LensModel``).
        images: image paths, a folder, PIL images, arrays or an ``(N, 3, H, W)`` tensor.
        method: explanation methods as :func:`~convlens.lens.cam.explain` takes them
            (``"gradcam,scorecam"`` or a list); ``"random"`` and ``"centre"`` are added as baselines.
        metric: names from :data:`METRICS` (comma-separated or a list), or ``"all"``.
        target: the classes to explain, as ``explain`` takes them (default: the top prediction).
        layer: the layer the CAMs read (default: the model's last convolutional stage).
        boxes: the objects' regions for ``pointing`` and ``energy``: a dict, a JSON or CSV file of
            ``[x0, y0, x1, y1]`` boxes in original-image pixels per image, or a folder of mask
            images (see the module doc).
        steps: the number of deletion/insertion intervals (more steps, a finer curve).
        tolerance: the pointing game's slack around a box, in original-image pixels.
        batch_size: perturbed inputs per forward pass (default
            :data:`~convlens.lens.faithfulness.FORWARD_BATCH`); the maps themselves are explained in
            the model's own batch size, or ``batch_size`` when smaller.
        seed: seeds the random baseline, ROAD's noise and the bootstrap intervals, so a run repeats.
        progress: called as ``progress(done, total)`` after each stage of the work.

    Returns:
        Scores: a view of the values per method x metric x image x target, the
            deletion/insertion and ROAD curves, and a leaderboard with bootstrap intervals.

    Raises:
        SpecError: an unknown metric or method, ``steps``/``tolerance``/``batch_size`` out of
            bounds, a box metric without ``boxes``, or boxes with a tensor batch (which has no
            original size to map them from).
        ConvlensError: a model, image, layer or target that cannot be resolved (the subclass names
            which: :class:`~convlens.errors.ModelError`, :class:`~convlens.errors.ImageError`...).
    """
    lm: LensModel = as_lens(model)
    batch_size = fa.FORWARD_BATCH if batch_size is None else batch_size
    metrics = check_settings(metric, steps, tolerance, batch_size)
    explain_batch = min(batch_size, lm.default_batch_size())
    methods, baselines = split_methods(method)
    need_boxes = [m for m in metrics if m in NEEDS_BOXES]
    table = load_boxes(boxes)
    if need_boxes and not table:
        raise SpecError(f"metric {', '.join(need_boxes)} needs boxes (a JSON or CSV file of "
                        "[x0, y0, x1, y1] per image)", param="boxes")
    inputs = prepare(lm, images)
    x = inputs.batch
    N = x.shape[0]
    entries = match_boxes(table, inputs.names) if table else [None] * N
    if need_boxes and inputs.sizes is None:
        raise SpecError("boxes need image files (a tensor batch has no original size)", param="boxes")
    groups = [g for g, ms in (("deletion", {"deletion", "insertion"}), ("avgdrop", {"avgdrop", "increase"}),
                              ("road", {"road", "road-morf", "road-lerf"})) if ms & set(metrics)]
    jobs = ["explain", *groups]
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(jobs))

    if methods:
        ex = explain(lm, x, method=methods, target=target, layer=layer, batch_size=explain_batch)
        maps = ex.maps.float()  # (M, N, T, H, W)
        targets = ex.targets
        layer_name = ex.layer
    else:
        ex = explain(lm, x, method="saliency", target=target, batch_size=explain_batch)
        maps = ex.maps[:0].float()
        targets, layer_name = ex.targets, ""
    tick()
    T, H, W = ex.maps.shape[2:]
    dev = maps.device
    base = [random_maps((N, T, H, W), seed, dev), centre_map(H, W, dev).expand(N, T, H, W)]
    allmaps = torch.cat([maps, torch.stack(base)]) if baselines else maps
    names = [*methods, *baselines]
    M = len(names)
    # every (method, image, target) item, flattened: one batched call per protocol
    idx_img = torch.arange(N, device=dev).view(1, N, 1).expand(M, N, T).reshape(-1)
    tgt = torch.tensor([[s.index for s in row] for row in targets], device=dev).view(1, N, T).expand(M, N, T).reshape(-1)
    flat_maps = allmaps.reshape(-1, H, W)
    xs = x[idx_img]
    module = lm.module
    was_training = module.training
    module.eval()
    values: dict[str, torch.Tensor] = {}
    curves: dict[str, torch.Tensor] = {}
    road_curves: dict[str, torch.Tensor] = {}
    fractions = None
    has = torch.zeros(N, T, dtype=torch.bool)
    try:
        if "deletion" in metrics or "insertion" in metrics:
            fractions, de, ins = fa.deletion_insertion(module, xs, flat_maps, tgt, steps=steps, insert_from="blur",
                                                       batch_size=batch_size)
            fractions = fractions.cpu()
            curves = {"deletion": de.view(M, N, T, -1).cpu(), "insertion": ins.view(M, N, T, -1).cpu()}
            values["deletion"] = fa.auc(fractions, curves["deletion"])
            values["insertion"] = fa.auc(fractions, curves["insertion"])
            tick()
        if "avgdrop" in metrics or "increase" in metrics:
            drop, inc = fa.average_drop_increase(module, xs, flat_maps, tgt, batch_size=batch_size)
            values["avgdrop"], values["increase"] = drop.view(M, N, T).cpu(), inc.view(M, N, T).cpu()
            tick()
        if any(m.startswith("road") for m in metrics):
            morf = fa.road(module, xs, flat_maps, tgt, fractions=ROAD_FRACTIONS, order="morf", batch_size=batch_size,
                           seed=seed).view(M, N, T, -1).cpu()
            lerf = fa.road(module, xs, flat_maps, tgt, fractions=ROAD_FRACTIONS, order="lerf", batch_size=batch_size,
                           seed=seed + 1).view(M, N, T, -1).cpu()
            road_curves = {"morf": morf, "lerf": lerf}
            values["road-morf"], values["road-lerf"] = morf.mean(-1), lerf.mean(-1)
            values["road"] = ((lerf - morf) / 2).mean(-1)
            tick()
    finally:
        module.train(was_training)
    if need_boxes:
        hit = torch.full((M, N, T), float("nan"))
        energy = torch.full((M, N, T), float("nan"))
        for i in range(N):
            for t, s in enumerate(targets[i]):
                bs = _target_boxes(entries[i], s.index, s.label, inputs.names[i])
                if not bs:
                    continue
                has[i, t] = True
                mask = box_mask(lm.config, inputs.sizes[i], bs, inputs.names[i])
                dist = box_distance(lm.config, inputs.sizes[i], bs) - float(tolerance)
                h_, e_ = pointing_energy(allmaps[:, i, t].cpu(), mask.expand(M, H, W), (None, None),
                                         dist.expand(M, H, W))
                hit[:, i, t], energy[:, i, t] = h_, e_
        if not bool(has.any()):
            raise SpecError("boxes match none of the images' targets (key them by class index or label, or give "
                            "a plain list for every target)", param="boxes")
        values["pointing"], values["energy"] = hit, energy
    values = {m: values[m].float() for m in metrics}
    return Scores(methods=names, metrics=metrics, values=values, images=list(inputs.names), targets=targets,
                  model_name=lm.name, layer=layer_name, steps=steps, seed=seed, tolerance=float(tolerance),
                  fractions=fractions, curves=curves, road_curves=road_curves,
                  has_boxes=has if need_boxes else None)
