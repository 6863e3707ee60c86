"""Shortcuts proven by intervention: the maps propose regions, masking them decides.

The shape of mean heatmaps is a hypothesis, not a verdict: a model that learned a corner patch
looks at that corner for every class (the patch's presence is one class's evidence, its
absence the other's), and a clean model's cluster can peak in a corner that holds nothing.  So:

1. **Candidates** (:func:`plan`, :func:`candidates`): the blobs (connected regions at half the
   maximum, :func:`blobs`; the first is :func:`~convlens.audit.spray.spot`) of each cluster's and
   each class's mean map and of the mean of all classes' (spots shared across classes), as boxes
   in fractions of the input; blobs larger than ``MAX_AREA`` of the input are no region.  Each candidate is tested for the class it came
   from (a shared spot for every class); every class also gets the global statistics
   (``STATISTICS``: brightness, contrast, border colour, the mean of each colour channel).
2. **Interventions** (:func:`measure`, batched forwards without gradients, the same function on
   both engines): on a seeded sample of each class's images (``PER_CLASS``, at most ``TOTAL`` in
   all) the box is filled with the data's mean colour (the sample's per-channel mean); the same
   box at ``CONTROLS`` random places on the class's images is the control (not run for a region whose
   masking changes next to nothing, ``NO_EFFECT``: it cannot be a finding).  A statistic is
   normalised per image (brightness: the image scaled so that its mean is the sample's; contrast:
   its spread around its mean scaled; a channel's mean scaled; the border band shifted), and the
   control is the same change in the opposite direction (the inverse factor, the opposite shift):
   the same size of change, which a model that learned "darker means A" does not mind.
   Rows go to ``interventions.parquet`` (:func:`schema`, the same from both engines).
3. **Verdicts** (:func:`verdicts`, a pure function of the table and the plan): per image the
   flip (its prediction was the class and is not after) and the drop in the class's probability,
   minus the control's mean over its places (paired); a seeded bootstrap over images gives the 95%
   interval of the mean difference.  A candidate is significant when the flip rate exceeds the
   control's by at least ``MIN_EFFECT`` with the interval above 0, or the probability drop's
   interval is above ``MIN_DROP``.  A region is a finding when it is significant and holds an
   artifact: at least ``HOLDERS`` of the class's images hold the same pixels in a good part of it
   (``SHARED`` of its cells within ``CONSTANT`` of the most common pattern, :func:`holders`: a patch,
   a watermark, a border on some or all of them; the effect is then measured on those images), since a region whose
   pixels vary is the object itself, which a model should use.  Overlapping findings of a class
   are one (:func:`merge`).  A global statistic is reported as a property of the data the model
   uses (with how much it differs between the classes, the standardised difference ``d``, at
   least 0.5 for a finding), never as a region.
"""

from __future__ import annotations

import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from ..models.lensmodel import LensModel
from ..render.files import atomic_write_bytes, atomic_write_json
from .engine import decoder
from .inputs import Item
from .maps import place

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
#: a finding's least effect beyond the control (flip rate, or the probability drop's lower bound)
MIN_EFFECT = 0.1
#: a finding's least drop in the class's probability beyond the control (the interval's lower bound)
MIN_DROP = 0.05
#: two images hold the same pixels in a region when at least ``SHARED`` of its cells differ by at most
#: ``CONSTANT`` (0..1 range; cells: the box pooled to ``CONTENT`` x ``CONTENT`` per channel)
CONSTANT = 0.01
SHARED = 0.2
#: the least share of a class's images that must hold the same pixels in a region for it to be an artifact
HOLDERS = 0.25
#: an image is affected by an intervention when its class's probability drops by at least this
AFFECTED = 0.1
BOOTSTRAP = 2000
CONFIDENCE = 0.95
#: the pixels of a region kept per image for the content test: the box pooled to this side
CONTENT = 16
#: a region whose masking lowers the class's probability (mean) and flips its predictions by less than this
#: gets no control (it cannot be a finding; the control would cost ``CONTROLS`` forwards of the class's sample)
NO_EFFECT = 0.02
#: images per forward
BATCH = 64
STATISTICS = ("brightness", "contrast", "border", "mean:red", "mean:green", "mean:blue")
PLAN = "interventions.json"
TABLE = "interventions.parquet"
BORDER_BAND = 0.125


def schema() -> pa.Schema:
    """One row per image and intervention: ``kind`` region / control / global / mirror; ``test`` the
    candidate or statistic's number in the plan; ``position`` the control's place (-1 otherwise);
    the image's audit ``index``, audited class and label; the class whose probability is measured
    (``target``) before and after, the predictions before and after; ``value`` the image's
    statistic (global rows); ``content`` the box's pixels pooled to ``CONTENT`` x ``CONTENT`` per
    channel (region rows of the candidate's class's images, and the control's first place: the reference)."""
    i32, f32 = pa.int32(), pa.float32()
    return pa.schema([("kind", pa.string()), ("test", i32), ("position", i32), ("index", pa.int64()),
                      ("klass", i32), ("label", i32), ("target", i32), ("pred_before", i32),
                      ("prob_before", f32), ("pred_after", i32), ("prob_after", f32), ("value", f32),
                      ("content", pa.list_(f32))])


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
         seed: int = 0, images: torch.Tensor | None = None, klass: Sequence[int] | None = None) -> dict[str, Any]:
    """What to intervene on (JSON-able; written as ``interventions.json``): the candidates, the sampled
    images, the control boxes' places (pixel offsets) and the statistics.  ``images``: the sample's
    raw images (0..1, ``(N, C, H, W)``) with their ``klass``: the regions where a class's pixels
    stand out from the others' (:func:`distinct`, Welch's t at least ``DISTINCT``) are candidates too,
    so a mark the maps miss (an empty Grad-CAM of a saturated class) is still tested."""
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
    stats = [s for s in STATISTICS if not s.startswith("mean:") or channels == 3]
    return {"candidates": [c.to_dict() for c in cands], "sample": the_sample, "controls": controls,
            "statistics": stats, "seed": seed, "size": [height, width], "controls_per_candidate": CONTROLS}


def pixel_box(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """A fractional box as pixel bounds ``(x0, y0, x1, y1)`` covering it, at least one pixel wide."""
    x0, y0 = int(math.floor(box[0] * width + 1e-6)), int(math.floor(box[1] * height + 1e-6))
    x1, y1 = int(math.ceil(box[2] * width - 1e-6)), int(math.ceil(box[3] * height - 1e-6))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


# -- the interventions ---------------------------------------------------------------------------

def _pool(region: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(region, (CONTENT, CONTENT)).reshape(region.shape[0], -1)


def _stat(x: torch.Tensor, name: str) -> torch.Tensor:
    """The statistic ``name`` of each raw image ``(N, C, H, W)`` in 0..1."""
    if name == "brightness":
        return x.mean(dim=(1, 2, 3))
    if name == "contrast":
        return x.std(dim=(1, 2, 3))
    if name == "border":
        return x[:, :, _band(x)].mean(dim=(1, 2))
    ch = ("red", "green", "blue").index(name.split(":")[1])
    return x[:, ch].mean(dim=(1, 2))


def _band(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    bh, bw = max(1, round(h * BORDER_BAND)), max(1, round(w * BORDER_BAND))
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:bh], m[-bh:], m[:, :bw], m[:, -bw:] = True, True, True, True
    return m


def _normalise(x: torch.Tensor, name: str, value: torch.Tensor, target: float, inverse: bool) -> torch.Tensor:
    """Each image's statistic moved to ``target`` (``inverse``: by the same factor or shift the other way)."""
    v = value.clamp_min(1e-4)
    if name == "border":
        shift = (target - value) * (-1 if inverse else 1)
        out = x.clone()
        band = _band(x)
        out[:, :, band] += shift.view(-1, 1, 1)
        return out.clamp(0, 1)
    f = (target / v).clamp(0.25, 4.0)
    f = 1 / f if inverse else f
    if name == "brightness":
        return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)
    if name == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (m + (x - m) * f.view(-1, 1, 1, 1)).clamp(0, 1)
    ch = ("red", "green", "blue").index(name.split(":")[1])
    out = x.clone()
    out[:, ch] = (x[:, ch] * f.view(-1, 1, 1)).clamp(0, 1)
    return out


def measure(lm: LensModel, images: torch.Tensor, index: Sequence[int], klass: Sequence[int],
            label: Sequence[int], the_plan: dict[str, Any], tests: Iterable[tuple[str, int]] | None = None,
            batch_size: int = BATCH) -> dict[str, list[Any]]:
    """The rows of :func:`schema` for ``images`` (the model's input tensors of the sampled items, in the
    order of ``index``) and the plan's ``tests`` (``("region", k)`` or ``("global", s)``; default all),
    as columns.  Forwards only, batched, no gradient."""
    prep = lm.config
    cols: dict[str, list[Any]] = {f.name: [] for f in schema()}
    index, klass, label = list(map(int, index)), list(map(int, klass)), list(map(int, label))
    pos = {i: j for j, i in enumerate(index)}
    device = lm.device
    raw = prep.denormalize(images.float())  # 0..1, on the CPU
    fill = raw.mean(dim=(0, 2, 3))
    h, w = raw.shape[-2:]

    def forward(batch_raw: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for s in range(0, len(batch_raw), batch_size):
                x = prep.normalize(batch_raw[s:s + batch_size]).to(device)
                out.append(torch.softmax(lm(x).float(), dim=1).cpu())
        return torch.cat(out) if out else torch.zeros(0, lm.num_classes)

    before = forward(raw)
    pred0 = before.argmax(dim=1)
    sample = {int(c): [pos[i] for i in v if i in pos] for c, v in the_plan["sample"].items()}
    everyone = list(range(len(index)))
    if tests is None:
        tests = all_tests(the_plan)

    def emit(kind: str, test: int, position: int, rows: list[int], target: Sequence[int], after: torch.Tensor,
             value: torch.Tensor | None, content: torch.Tensor | None, keep: torch.Tensor | None = None) -> None:
        pa_ = after.argmax(dim=1)
        for j, r in enumerate(rows):
            t = int(target[j])
            cols["kind"].append(kind)
            cols["test"].append(test)
            cols["position"].append(position)
            cols["index"].append(index[r])
            cols["klass"].append(klass[r])
            cols["label"].append(label[r])
            cols["target"].append(t)
            cols["pred_before"].append(int(pred0[r]))
            cols["prob_before"].append(float(before[r, t]))
            cols["pred_after"].append(int(pa_[j]))
            cols["prob_after"].append(float(after[j, t]))
            cols["value"].append(None if value is None else float(value[j]))
            cols["content"].append(None if content is None or (keep is not None and not keep[j])
                                   else content[j].tolist())

    for kind, k in tests:
        if kind == "region":
            cand = the_plan["candidates"][k]
            c = int(cand["klass"])
            x0, y0, x1, y1 = pixel_box(cand["box"], h, w)
            x = raw.clone()
            content = _pool(raw[:, :, y0:y1, x0:x1])
            x[:, :, y0:y1, x0:x1] = fill.view(1, -1, 1, 1)
            keep = torch.as_tensor([klass[r] == c for r in everyone])  # the content of the class's images only
            after = forward(x)
            emit("region", k, -1, everyone, [c] * len(everyone), after, None, content, keep)
            own = sample.get(c, [])
            if not own:
                continue
            mine = torch.as_tensor(own)
            drop = (before[mine, c] - after[mine, c]).mean()
            flips = ((pred0[mine] == c) & (after[mine].argmax(dim=1) != c)).float().mean()
            if drop < NO_EFFECT and flips < NO_EFFECT:  # nothing to tell apart from a control: none run
                continue
            bw, bh = x1 - x0, y1 - y0
            for p, (px, py) in enumerate(the_plan["controls"][k]):
                x = raw[own].clone()
                content = _pool(x[:, :, py:py + bh, px:px + bw]) if p == 0 else None  # one place: the reference
                x[:, :, py:py + bh, px:px + bw] = fill.view(1, -1, 1, 1)
                emit("control", k, p, own, [c] * len(own), forward(x), None, content)
        else:
            name = the_plan["statistics"][k]
            value = _stat(raw, name)
            # the target: the mean over classes of each class's mean statistic (balanced)
            per_class = [value[v].mean() for v in sample.values() if v]
            target = float(torch.stack(per_class).mean()) if per_class else float(value.mean())
            tgt = [klass[r] for r in everyone]
            after = forward(_normalise(raw, name, value, target, False))
            emit("global", k, -1, everyone, tgt, after, value, None)
            t_ = torch.as_tensor(tgt)
            drop = before.gather(1, t_[:, None])[:, 0] - after.gather(1, t_[:, None])[:, 0]
            flips = ((pred0 == t_) & (after.argmax(dim=1) != t_)).float()
            if all(float(drop[t_ == c].mean()) < NO_EFFECT and float(flips[t_ == c].mean()) < NO_EFFECT
                   for c in set(tgt)):
                continue  # no class minds it: no control to run (see NO_EFFECT)
            emit("mirror", k, -1, everyone, tgt, forward(_normalise(raw, name, value, target, True)), value, None)
    return cols


def write_table(out: Path, cols: dict[str, list[Any]]) -> Path:
    s = schema()
    table = pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in s], schema=s)
    # one order whatever engine and worker measured which rows
    table = table.sort_by([("test", "ascending"), ("kind", "ascending"), ("position", "ascending"),
                           ("index", "ascending")])
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return atomic_write_bytes(out / TABLE, buf.getvalue())


def write_plan(out: Path, the_plan: dict[str, Any]) -> Path:
    return atomic_write_json(out / PLAN, the_plan)


def concat(parts: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    return {f.name: [v for p in parts for v in p[f.name]] for f in schema()}


# -- the verdicts ------------------------------------------------------------------------------

def bootstrap(diff: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The ``CONFIDENCE`` percentile interval of the mean of ``diff`` over a seeded bootstrap of its rows."""
    if len(diff) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(axis=1)
    a = (1 - CONFIDENCE) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def _cols(table: pa.Table) -> dict[str, np.ndarray]:
    out = {}
    for f in schema():
        if f.name == "content":
            continue
        col = table.column(f.name)
        if f.name in ("kind",):
            out[f.name] = np.asarray(col.to_pylist(), object)
        else:
            null = np.nan if pa.types.is_floating(f.type) else -1
            out[f.name] = np.asarray(col.fill_null(null).to_numpy(zero_copy_only=False))
    return out


def _r(v: float | None, n: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), n)


@dataclass
class Verdict:
    """One tested hypothesis (region or statistic) with its numbers; a finding when ``found``."""

    klass: int
    region: Any
    found: bool
    numbers: dict[str, Any]
    why: str
    clusters: list[int]
    test: tuple[str, int]

    def finding(self, names: Sequence[str]) -> dict[str, Any]:
        """The ``--json`` shape of a finding: ``effect`` and ``control`` are the share of the class's
        predictions changed (``measure`` "flip rate") or, when that alone does not show it, the mean drop
        in the class's probability ("probability drop"); ``ci`` the 95% interval of their difference."""
        n = self.numbers
        flips = n["measure"] == "flip rate"
        return {"class": names[self.klass] if 0 <= self.klass < len(names) else f"class {self.klass}",
                "region": self.region, "measure": n["measure"], "effect": n["effect"] if flips else n["drop"],
                "control": n["control"] if flips else n["control_drop"], "ci": n["ci"] if flips else n["drop_ci"],
                "constant_content": n.get("constant_content"), "accuracy_without": n.get("accuracy_without"),
                "why": self.why}


def _name(names: Sequence[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else f"class {c}"


def _paired(t: dict[str, np.ndarray], sel: np.ndarray, csel: np.ndarray, c: int) -> dict[str, Any] | None:
    """Flip and drop of the rows ``sel`` (one per image) against the mean of the control rows ``csel``
    of the same images (matched by index), for class ``c``."""
    idx = t["index"][sel]
    if not len(idx):
        return None
    flip = ((t["pred_before"][sel] == c) & (t["pred_after"][sel] != c)).astype(float)
    drop = (t["prob_before"][sel] - t["prob_after"][sel]).astype(float)
    cflip_all = ((t["pred_before"][csel] == c) & (t["pred_after"][csel] != c)).astype(float)
    cdrop_all = (t["prob_before"][csel] - t["prob_after"][csel]).astype(float)
    cidx = t["index"][csel]
    order = {int(i): j for j, i in enumerate(idx)}
    cflip, cdrop, cnt = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx))
    for i, f, d in zip(cidx, cflip_all, cdrop_all):
        j = order.get(int(i))
        if j is not None:
            cflip[j] += f
            cdrop[j] += d
            cnt[j] += 1
    keep = cnt > 0
    if not keep.any():
        return None
    cflip, cdrop = cflip[keep] / cnt[keep], cdrop[keep] / cnt[keep]
    flip, drop = flip[keep], drop[keep]
    return {"flip": flip, "drop": drop, "cflip": cflip, "cdrop": cdrop, "rows": np.flatnonzero(sel)[keep],
            "was": float((t["pred_before"][sel][keep] == c).mean())}


def verdicts(table: pa.Table, the_plan: dict[str, Any], names: Sequence[str]) -> list[Verdict]:
    """Every candidate's and statistic's verdict (see the module doc); findings are those with ``found``."""
    if table.num_rows == 0:
        return []
    t = _cols(table)
    content = table.column("content").to_pylist()
    out: list[Verdict] = []
    seed = int(the_plan.get("seed", 0))
    for k, cand in enumerate(the_plan["candidates"]):
        c = int(cand["klass"])
        reg = t["kind"] == "region"
        sel = reg & (t["test"] == k) & (t["klass"] == c)
        csel = (t["kind"] == "control") & (t["test"] == k)
        rows = np.flatnonzero(sel)
        if not len(rows):
            continue
        if not csel.any():  # no effect at all: no control was run (see NO_EFFECT)
            out.append(_no_effect(t, k, cand, rows, names))
            continue
        held, spread = holders(np.asarray([content[r] for r in rows], np.float64))
        share = float(held.mean())
        if held.any():  # the images that hold the same pixels there: the effect is measured on them
            sel = np.zeros_like(sel)
            sel[rows[held]] = True
        p = _paired(t, sel, csel, c)
        if p is None:
            continue
        out.append(_region_verdict(t, content, k, cand, p, names, seed, share, spread))
    for s, name in enumerate(the_plan["statistics"]):
        for c in sorted(set(int(v) for v in t["klass"][(t["kind"] == "global") & (t["test"] == s)])):
            sel = (t["kind"] == "global") & (t["test"] == s) & (t["klass"] == c)
            csel = (t["kind"] == "mirror") & (t["test"] == s) & (t["klass"] == c)
            if not csel.any():
                rows = np.flatnonzero(sel)
                flip = float(((t["pred_before"][rows] == c) & (t["pred_after"][rows] != c)).mean())
                drop = float((t["prob_before"][rows] - t["prob_after"][rows]).mean())
                out.append(Verdict(c, f"global:{name}", False, {
                    "measure": "flip rate", "effect": _r(flip), "control": None, "ci": None, "drop": _r(drop),
                    "control_drop": None, "drop_ci": None, "images": int(len(rows)), "significant": False,
                    "constant_content": None, "statistic": name},
                    f"not relied on: normalising {name} per image changes {100 * flip:.0f}% of "
                    f"'{_name(names, c)}' predictions and lowers its probability by {drop:.2f} ({len(rows)} images): "
                    "too little to need a control", [], ("global", s)))
                continue
            p = _paired(t, sel, csel, c)
            if p is None:
                continue
            out.append(_global_verdict(t, s, name, c, p, names, seed))
    return merge(out)


def merge(verdicts: list[Verdict]) -> list[Verdict]:
    """Overlapping region findings of one class are one finding: the one with the largest drop stays,
    the others stand down (their clusters join it)."""
    found = sorted((v for v in verdicts if v.found and v.test[0] == "region"), key=lambda v: -v.numbers["drop"])
    kept: list[Verdict] = []
    for v in found:
        same = next((u for u in kept if u.klass == v.klass and iou(u.region, v.region) > 0), None)
        if same is None:
            kept.append(v)
            continue
        v.found = False
        v.why = f"the same evidence as the finding at {', '.join(f'{x:.2f}' for x in same.region)}: {v.why}"
        same.clusters = sorted(set(same.clusters) | set(v.clusters))
    return verdicts


def _test(p: dict[str, Any], seed: int) -> dict[str, Any]:
    effect, control = float(p["flip"].mean()), float(p["cflip"].mean())
    ci = bootstrap(p["flip"] - p["cflip"], seed)
    drop, cdrop = float(p["drop"].mean()), float(p["cdrop"].mean())
    dci = bootstrap(p["drop"] - p["cdrop"], seed + 1)
    by_flips = effect - control >= MIN_EFFECT and ci[0] > 0
    found = by_flips or dci[0] >= MIN_DROP
    return {"measure": "flip rate" if by_flips or not found else "probability drop", "effect": _r(effect), "control": _r(control), "ci": [_r(ci[0]), _r(ci[1])], "drop": _r(drop),
            "control_drop": _r(cdrop), "drop_ci": [_r(dci[0]), _r(dci[1])], "images": int(len(p["flip"])),
            "predicted_before": _r(p["was"]), "significant": bool(found)}


def _accuracy(t: dict[str, np.ndarray], sel: np.ndarray) -> tuple[float | None, float | None]:
    known = sel & (t["label"] >= 0)
    if not known.any():
        return None, None
    return (float((t["pred_before"][known] == t["label"][known]).mean()),
            float((t["pred_after"][known] == t["label"][known]).mean()))


def _to(t: dict[str, np.ndarray], rows: np.ndarray, c: int, names: Sequence[str]) -> str:
    after = t["pred_after"][rows]
    flipped = after[(t["pred_before"][rows] == c) & (after != c)]
    if not len(flipped):
        return ""
    v, n = np.unique(flipped, return_counts=True)
    return f" to '{_name(names, int(v[np.argmax(n)]))}'"


def holders(vec: np.ndarray) -> tuple[np.ndarray, float]:
    """The images ``(n, d)`` of pooled region pixels that share the most common pattern: at least
    ``SHARED`` of the cells within ``CONSTANT`` of the same cells of the image with the most such
    neighbours (a patch, a watermark's strokes: the rest of the box may vary), when they are at least
    ``HOLDERS`` of the images (else none); and the spread of the pixels (mean per-cell standard
    deviation) over those, or over all when none."""
    n = len(vec)
    if n < 2:
        return np.ones(n, bool), 0.0
    agree = (np.abs(vec[:, None, :] - vec[None, :, :]) <= CONSTANT).mean(axis=2)
    near = agree >= SHARED
    best = int(np.argmax(near.sum(axis=1)))
    held = near[best]
    if held.sum() < max(3, HOLDERS * n):
        return np.zeros(n, bool), float(vec.std(axis=0).mean())
    return held, float(vec[held].std(axis=0).mean())


def _region_verdict(t: dict[str, np.ndarray], content: list[Any], k: int, cand: dict[str, Any], p: dict[str, Any],
                    names: Sequence[str], seed: int, share: float, spread: float) -> Verdict:
    c, box = int(cand["klass"]), [float(v) for v in cand["box"]]
    nums = _test(p, seed + 17 * k)
    rows = p["rows"]
    hit = rows[p["drop"] >= AFFECTED]
    ctrl_rows = np.flatnonzero((t["kind"] == "control") & (t["test"] == k))
    cvec = np.asarray([content[r] for r in ctrl_rows if content[r] is not None], np.float64)
    cspread = float(cvec.std(axis=0).mean()) if len(cvec) > 1 else None
    constant = share > 0
    before, without = _accuracy(t, (t["kind"] == "region") & (t["test"] == k))
    others = (t["kind"] == "region") & (t["test"] == k) & (t["klass"] != c)
    others_changed = float((t["pred_before"][others] != t["pred_after"][others]).mean()) if others.any() else None
    # each control place's flip rate: the control's distribution
    ctl_dist = []
    for q in sorted(set(t["position"][ctrl_rows].tolist())):
        r = ctrl_rows[t["position"][ctrl_rows] == q]
        ctl_dist.append(_r(float(((t["pred_before"][r] == c) & (t["pred_after"][r] != c)).mean())))
    nums.update({"constant_content": bool(constant), "content_spread": _r(spread), "control_content_spread":
                 _r(cspread), "accuracy_before": _r(before), "accuracy_without": _r(without),
                 "others_changed": _r(others_changed), "control_distribution": ctl_dist, "source": cand["source"],
                 "affected": int(len(hit)), "holders": _r(share)})
    found = nums["significant"] and constant
    name = _name(names, c)
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    size = f"{100 * (box[2] - box[0]):.0f}% x {100 * (box[3] - box[1]):.0f}%"
    what = (f"masking a region of {size} of the input at {place(x, y)} ({', '.join(f'{v:.2f}' for v in box)}) "
            f"changes {100 * nums['effect']:.0f}% of '{name}' predictions{_to(t, rows, c, names)} and lowers its "
            f"probability by {nums['drop']:.2f} on average (random regions of that size: {100 * nums['control']:.1f}% "
            f"changed, {nums['control_drop']:.2f} lower; {100 * CONFIDENCE:.0f}% CI of the difference "
            f"{100 * nums['ci'][0]:.0f}% to {100 * nums['ci'][1]:.0f}%, of the drop {nums['drop_ci'][0]:.2f} to "
            f"{nums['drop_ci'][1]:.2f}; {nums['images']} images)")
    if others_changed is not None:
        what += f"; on the other classes' images it changes {100 * others_changed:.0f}% of predictions"
    if without is not None:
        what += f"; accuracy with the region masked: {100 * without:.0f}% (before: {100 * before:.0f}%)"
    content_words = (f"{100 * share:.0f}% of the '{name}' images hold nearly the same pixels there (spread {spread:.3f}; "
                     f"random regions {cspread if cspread is None else round(cspread, 3)}): a mark, patch or "
                     "watermark, and the numbers are on those images" if constant else
                     f"its pixels vary between images (spread {spread:.3f}): the object itself")
    if found:
        why = f"shortcut: {what}; {content_words}"
    elif nums["significant"]:
        why = f"the model uses this region, but {content_words}, so it is no shortcut: {what}"
    else:
        why = f"not a shortcut: {what}"
    return Verdict(c, [_r(v) for v in box], found, nums, why, list(cand["clusters"]), ("region", k))


def _no_effect(t: dict[str, np.ndarray], k: int, cand: dict[str, Any], rows: np.ndarray, names: Sequence[str]
               ) -> Verdict:
    c, box = int(cand["klass"]), [float(v) for v in cand["box"]]
    flip = float(((t["pred_before"][rows] == c) & (t["pred_after"][rows] != c)).mean())
    drop = float((t["prob_before"][rows] - t["prob_after"][rows]).mean())
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    nums = {"measure": "flip rate", "effect": _r(flip), "control": None, "ci": None, "drop": _r(drop),
            "control_drop": None, "drop_ci": None, "images": int(len(rows)), "significant": False,
            "constant_content": None, "source": cand["source"]}
    why = (f"not a shortcut: masking the region at {place(x, y)} ({', '.join(f'{v:.2f}' for v in box)}) changes "
           f"{100 * flip:.0f}% of '{_name(names, c)}' predictions and lowers its probability by {drop:.2f} on average "
           f"({len(rows)} images): too little to need a control")
    return Verdict(c, [_r(v) for v in box], False, nums, why, list(cand["clusters"]), ("region", k))


def _global_verdict(t: dict[str, np.ndarray], s: int, name: str, c: int, p: dict[str, Any], names: Sequence[str],
                    seed: int) -> Verdict:
    nums = _test(p, seed + 1000 + 31 * s + c)
    g = (t["kind"] == "global") & (t["test"] == s)
    mine, rest = t["value"][g & (t["klass"] == c)], t["value"][g & (t["klass"] != c)]
    d = None
    if len(rest) > 1 and len(mine) > 1:
        pooled = math.sqrt((mine.var(ddof=1) + rest.var(ddof=1)) / 2)
        d = float((mine.mean() - rest.mean()) / pooled) if pooled > 0 else None
    before, without = _accuracy(t, g)
    nums.update({"constant_content": None, "accuracy_before": _r(before), "accuracy_without": _r(without),
                 "class_value": _r(float(mine.mean()) if len(mine) else None),
                 "others_value": _r(float(rest.mean()) if len(rest) else None), "difference_d": _r(d),
                 "statistic": name})
    cname = _name(names, c)
    diff = (f"'{cname}' images have {name} {nums['class_value']:.3f} against {nums['others_value']:.3f} in the "
            f"others' (standardised difference {d:+.2f})" if d is not None else f"'{cname}' images' {name}")
    what = (f"normalising {name} per image changes {100 * nums['effect']:.0f}% of '{cname}' predictions"
            f"{_to(t, p['rows'], c, names)} and lowers its probability by {nums['drop']:.2f} (the same change in the "
            f"opposite direction: {100 * nums['control']:.1f}% changed, {nums['control_drop']:.2f} lower; "
            f"{100 * CONFIDENCE:.0f}% CI of the difference {100 * nums['ci'][0]:.0f}% to {100 * nums['ci'][1]:.0f}%; "
            f"{nums['images']} images)")
    if without is not None:
        what += f"; accuracy with {name} normalised: {100 * without:.0f}% (before: {100 * before:.0f}%)"
    found = nums["significant"] and d is not None and abs(d) >= 0.5
    if found:
        why = (f"a property of the data the model uses: {diff}; {what}. A confound unless {name} really tells "
               "the classes apart")
    else:
        why = f"not relied on: {diff}; {what}"
    return Verdict(c, f"global:{name}", found, nums, why, [], ("global", s))


def read(out: Path) -> tuple[dict[str, Any] | None, pa.Table | None]:
    """The plan and the table of an audit directory (None, None when it has none)."""
    p, tp = out / PLAN, out / TABLE
    if not p.is_file() or not tp.is_file():
        return None, None
    return json.loads(p.read_text(encoding="utf-8")), pq.read_table(str(tp), schema=schema())


@dataclass
class Subject:
    """A sampled image: its item, the class it is audited under and its label (-1 unknown)."""

    item: Item
    klass: int
    label: int


def subjects(the_plan: dict[str, Any], items: Sequence[Item], klass: dict[int, int], label: dict[int, int]
             ) -> list[Subject]:
    """The plan's sampled images as :class:`Subject` rows, in the plan's order."""
    return [Subject(items[i], klass[i], label[i]) for v in the_plan["sample"].values() for i in v]


def decode(lm: LensModel, subs: Sequence[Subject], workers: int = 2
           ) -> tuple[torch.Tensor, list[int], list[int], list[int]]:
    """The subjects' input tensors (the readable ones: the audit read them all already) and their
    index, class and label lists."""
    one = decoder(lm)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        got = list(pool.map(lambda s: one(s.item), subs))
    keep = [j for j, d in enumerate(got) if d.tensor is not None]
    c, h, w = lm.config.input_size
    x = torch.stack([got[j].tensor for j in keep]) if keep else torch.zeros(0, c, h, w)
    return (x, [subs[j].item.index for j in keep], [subs[j].klass for j in keep], [subs[j].label for j in keep])


def all_tests(the_plan: dict[str, Any]) -> list[tuple[str, int]]:
    return [("region", k) for k in range(len(the_plan["candidates"]))] + \
        [("global", s) for s in range(len(the_plan["statistics"]))]



