"""The hypotheses: candidate regions from the audit's maps (and from where a class's pixels stand out),
the sampled images, the control boxes' places and the global statistics: the plan."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

#: images sampled per class (fewer when the classes are many: at most ``TOTAL`` in all, at least ``MIN_PER_CLASS``)
PER_CLASS = 32
TOTAL = 512
MIN_PER_CLASS = 8
#: random places of the control box per candidate
CONTROLS = 4
#: a spot larger than this share of the input is not a region
MAX_AREA = 0.25
#: candidates whose boxes overlap more than this (intersection over union) are tested once
SAME_BOX = 0.6
#: at most this many region candidates per audit (the smallest spots first)
MAX_CANDIDATES = 8
#: the regions tested for a class whose maps give no spot (empty maps, e.g. Grad-CAM of a class whose
#: evidence is small beside a dense head, or maps spread wider than ``MAX_AREA``)
CORNERS = ((0.0, 0.0, 0.25, 0.25), (0.75, 0.0, 1.0, 0.25), (0.0, 0.75, 0.25, 1.0), (0.75, 0.75, 1.0, 1.0))
#: Welch's t of a pixel between a class and the others that makes it part of a content candidate
DISTINCT = 8.0
#: blobs taken from one mean map
BLOBS = 2
#: a cluster's mean map this many times denser in a candidate's box than uniform makes it one of the cluster's
DENSE = 2.0

STATISTICS = ("brightness", "contrast", "border", "mean:red", "mean:green", "mean:blue")

@dataclass
class Candidate:
    """A region to test for class ``klass``: ``box`` (x0, y0, x1, y1) in fractions of the input, where
    it came from (``source``) and the clusters of ``klass`` it stands for."""

    box: tuple[float, float, float, float]
    klass: int
    source: str
    clusters: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 5) for v in self.box], "klass": self.klass, "source": self.source,
                "clusters": list(self.clusters)}


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The bounding box of a boolean grid mask, in fractions of the grid."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def area(box: Sequence[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def blobs(mean: np.ndarray, level: float = 0.5, most: int = BLOBS) -> list[np.ndarray]:
    """The connected regions (4-neighbours) of ``mean`` at least ``level`` of its maximum, the hottest
    first, at most ``most``: the spot around the peak (:func:`~convlens.audit.spray.spot`) and the
    secondary ones (a patch on some of a class's images is a second blob beside the object)."""
    from scipy import ndimage  # here: the Ray workers import this module and never need it

    m = np.asarray(mean, np.float64)
    top = m.max()
    if not top > 0:
        return []
    regions, n = ndimage.label(m >= level * top)
    if n == 0:
        return []
    peaks = ndimage.maximum(m, regions, index=np.arange(1, n + 1))
    order = np.argsort(-np.asarray(peaks), kind="stable")[:most]
    return [regions == (i + 1) for i in order]


def density(mean: np.ndarray, box: Sequence[float]) -> float:
    """How many times its share of the grid the mass of ``mean`` in ``box`` is (1: no more than uniform)."""
    m = np.clip(np.asarray(mean, np.float64), 0, None)
    total = m.sum()
    if not total > 0:
        return 0.0
    h, w = m.shape
    x0, y0, x1, y1 = pixel_box(box, h, w)
    return float(m[y0:y1, x0:x1].sum() / total / (((x1 - x0) * (y1 - y0)) / (h * w)))


def candidates(classes: Sequence[Any], extra: dict[int, list[np.ndarray]] | None = None) -> list[Candidate]:
    """The region candidates of an audit's classes (:class:`~convlens.audit.result.ClassAudit` rows:
    ``index``, ``name``, ``mean``, ``clusters`` with ``mean``): the blobs of each cluster's and each
    class's mean map and of the mean of all classes' (tested for every class), deduplicated per class
    by overlap.  A candidate is one of a cluster's when it is that cluster's blob or the cluster's mean
    map holds at least ``DENSE`` times its share in the box.  ``extra``: more blobs per class index (grid
    masks of the input, e.g. where the class's pixels stand out, see :func:`plan`)."""
    found: list[Candidate] = []

    def add(box: tuple[float, float, float, float], klass: int, source: str) -> None:
        if area(box) > MAX_AREA:
            return
        for c in found:
            if c.klass == klass and iou(c.box, box) >= SAME_BOX:
                return
        found.append(Candidate(box, klass, source, []))

    for c in classes:
        for k, cl in enumerate(c.clusters):
            for b in blobs(cl.mean):
                add(box_of(b), c.index, f"strategy #{k + 1} of '{c.name}'")
        for b in blobs(c.mean):
            add(box_of(b), c.index, f"the mean map of '{c.name}'")
    if len(classes) > 1:
        means = [c.mean / c.mean.sum() for c in classes if c.mean.sum() > 0]
        if means:
            for b in blobs(np.mean(means, axis=0)):
                for c in classes:
                    add(box_of(b), c.index, "a spot every class looks at")
    names = {c.index: c.name for c in classes}
    for k, masks in (extra or {}).items():
        for b in masks:
            add(box_of(b), k, f"where the pixels of '{names.get(k, k)}' stand out from the other classes'")
    for c in classes:  # maps that give no spot (empty, or spread): the corners, where marks usually are
        if not any(f.klass == c.index for f in found):
            why = "empty" if not np.nanmax(c.mean, initial=0.0) > 0 else "spread"
            for box in CORNERS:
                add(box, c.index, f"a corner (the maps of '{c.name}' are {why}: no spot to test)")
    found.sort(key=lambda c: area(c.box))
    kept = sorted(found[:MAX_CANDIDATES], key=lambda c: (c.klass, c.box))
    by_class = {c.index: c for c in classes}
    for cand in kept:
        for k, cl in enumerate(by_class[cand.klass].clusters):
            if any(iou(box_of(b), cand.box) >= SAME_BOX for b in blobs(cl.mean)) or density(cl.mean, cand.box) >= DENSE:
                cand.clusters.append(k)
    return kept


def sample(klass: np.ndarray, index: np.ndarray, seed: int = 0) -> dict[str, list[int]]:
    """The sampled images of each class (audit ``index``es; ``klass``: each image's audited class):
    ``PER_CLASS`` of each, fewer when the classes are many (at most ``TOTAL``, at least ``MIN_PER_CLASS``)."""
    rng = np.random.default_rng(seed)
    present = sorted(set(int(k) for k in klass))
    per = max(MIN_PER_CLASS, min(PER_CLASS, TOTAL // max(1, len(present))))
    out = {}
    for c in present:
        rows = np.flatnonzero(klass == c)
        pick = rows if len(rows) <= per else np.sort(rng.choice(rows, per, replace=False))
        out[str(c)] = [int(i) for i in index[pick]]
    return out


def distinct(raw: torch.Tensor, klass: Sequence[int], c: int) -> np.ndarray:
    """Per pixel, how far class ``c``'s images stand from the others' (Welch's t of the channel mean):
    large where one class carries something the others do not (a patch, a watermark) and where the
    objects differ; the verdicts tell the two apart."""
    k = np.asarray(klass)
    a, b = raw[torch.as_tensor(k == c)].mean(dim=1), raw[torch.as_tensor(k != c)].mean(dim=1)
    if len(a) < 4 or len(b) < 4:
        return np.zeros(raw.shape[-2:])
    se = (a.var(dim=0) / len(a) + b.var(dim=0) / len(b) + 1e-6).sqrt()
    return ((a.mean(dim=0) - b.mean(dim=0)).abs() / se).numpy()


def plan(classes: Sequence[Any], the_sample: dict[str, list[int]], channels: int, height: int, width: int,
         seed: int = 0, images: torch.Tensor | None = None, klass: Sequence[int] | None = None,
         replace: str = "mean", maps: dict[int, np.ndarray] | None = None) -> dict[str, Any]:
    """What to intervene on (JSON-able; written as ``interventions.json``): the candidates, the sampled
    images, the control boxes' places (pixel offsets), the statistics and how a region is replaced
    (``replace``, see :mod:`~convlens.audit.interventions.masking`).  ``images``: the sample's
    raw images (0..1, ``(N, C, H, W)``) with their ``klass``: the regions where a class's pixels
    stand out from the others' (:func:`distinct`, Welch's t at least ``DISTINCT``) are candidates too,
    so a mark the maps miss (an empty Grad-CAM of a saturated class) is still tested; their mean colour
    is the ``fill`` of ``mean``.  ``maps``: the sampled images' maps by audit index: each candidate's
    ``objects``, per image of its class the box of where else its map points (:func:`object_box`)."""
    rng = np.random.default_rng(seed)
    extra: dict[int, list[np.ndarray]] = {}
    if images is not None and klass is not None and len(images):
        for c in sorted(set(int(v) for v in klass)):
            t = distinct(images, klass, c)
            extra[c] = blobs(np.where(t >= DISTINCT, t, 0.0), level=1e-9) if t.max() >= DISTINCT else []
    cands = candidates(classes, extra)
    controls = []
    for cand in cands:
        x0, y0, x1, y1 = pixel_box(cand.box, height, width)
        bw, bh = x1 - x0, y1 - y0
        places = []
        for _ in range(CONTROLS):
            best = None
            for _try in range(20):  # away from the candidate where there is room
                px, py = int(rng.integers(0, width - bw + 1)), int(rng.integers(0, height - bh + 1))
                best = (px, py)
                if iou((px, py, px + bw, py + bh), (x0, y0, x1, y1)) == 0:
                    break
            places.append(list(best))
        controls.append(places)
    objects = []
    for cand in cands:
        boxes = {}
        for i in the_sample.get(str(cand.klass), []):
            m = None if maps is None else maps.get(int(i))
            b = None if m is None else object_box(m, cand.box)
            if b is not None:
                boxes[str(i)] = b
        objects.append(boxes)
    stats = [s for s in STATISTICS if not s.startswith("mean:") or channels == 3]
    fill = None if images is None or not len(images) else [round(float(v), 6) for v in images.mean(dim=(0, 2, 3))]
    return {"candidates": [c.to_dict() for c in cands], "sample": the_sample, "controls": controls,
            "statistics": stats, "seed": seed, "size": [height, width], "controls_per_candidate": CONTROLS,
            "replace": replace, "fill": fill, "objects": objects}


def object_box(m: np.ndarray, box: Sequence[float]) -> list[float] | None:
    """Where else than ``box`` one image's map ``m`` points: the main blob (:func:`blobs`) of the map
    with the box zeroed, widened by half its side (at least a cell: a blurred map's halo around the
    box is the box's), as a box of the input; None when nothing is left (the image's object, as far as
    the model's map tells, for the object control)."""
    m = np.clip(np.nan_to_num(np.asarray(m, np.float64)), 0, None)
    h, w = m.shape
    x0, y0, x1, y1 = pixel_box(box, h, w)
    mx, my = max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2)
    m[max(0, y0 - my):y1 + my, max(0, x0 - mx):x1 + mx] = 0.0
    found = blobs(m, most=1)
    return [round(v, 5) for v in box_of(found[0])] if found else None


def pixel_box(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """A fractional box as pixel bounds ``(x0, y0, x1, y1)`` covering it, at least one pixel wide."""
    x0, y0 = int(math.floor(box[0] * width + 1e-6)), int(math.floor(box[1] * height + 1e-6))
    x1, y1 = int(math.ceil(box[2] * width - 1e-6)), int(math.ceil(box[3] * height - 1e-6))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)
