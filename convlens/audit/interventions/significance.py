"""The statistics of the verdicts: the table as arrays, paired differences against the control, the
seeded bootstrap interval, the significance test and the content test (who holds the same pixels)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .records import schema

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

# -- the verdicts ------------------------------------------------------------------------------

def bootstrap(diff: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The ``CONFIDENCE`` percentile interval of the mean of ``diff`` over a seeded bootstrap of its rows."""
    if len(diff) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(axis=1)
    a = (1 - CONFIDENCE) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def columns(table: pa.Table) -> dict[str, np.ndarray]:
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


def rounded(v: float | None, n: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), n)


def paired(t: dict[str, np.ndarray], sel: np.ndarray, csel: np.ndarray, c: int) -> dict[str, Any] | None:
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


def effect_numbers(p: dict[str, Any], seed: int) -> dict[str, Any]:
    """The numbers of a paired comparison ``p`` (:func:`paired`): the effect and the control's, their
    difference's bootstrap interval, for the flip rate and the probability drop, and whether it is
    significant (the flip rate at least ``MIN_EFFECT`` above the control with the interval above 0, or
    the drop's interval above ``MIN_DROP``)."""
    effect, control = float(p["flip"].mean()), float(p["cflip"].mean())
    ci = bootstrap(p["flip"] - p["cflip"], seed)
    drop, cdrop = float(p["drop"].mean()), float(p["cdrop"].mean())
    dci = bootstrap(p["drop"] - p["cdrop"], seed + 1)
    by_flips = effect - control >= MIN_EFFECT and ci[0] > 0
    found = by_flips or dci[0] >= MIN_DROP
    return {"measure": "flip rate" if by_flips or not found else "probability drop", "effect": rounded(effect),
            "control": rounded(control), "ci": [rounded(ci[0]), rounded(ci[1])], "drop": rounded(drop),
            "control_drop": rounded(cdrop), "drop_ci": [rounded(dci[0]), rounded(dci[1])],
            "images": int(len(p["flip"])), "predicted_before": rounded(p["was"]), "significant": bool(found)}


def accuracy(t: dict[str, np.ndarray], sel: np.ndarray) -> tuple[float | None, float | None]:
    known = sel & (t["label"] >= 0)
    if not known.any():
        return None, None
    return (float((t["pred_before"][known] == t["label"][known]).mean()),
            float((t["pred_after"][known] == t["label"][known]).mean()))




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
