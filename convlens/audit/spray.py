"""Strategies (SpRAy, Lapuschkin et al. 2019): spectral clustering of one class's heatmaps, and the
shortcut test on each cluster.

The maps are area-pooled to ``POOL`` x ``POOL`` and scaled to unit length (two maps are near when
they put their weight in the same places, whatever their strength); the affinity is the
symmetrised ``n_neighbors``-nearest-neighbour graph; the number of clusters is the eigengap of
its normalised Laplacian (the ``k`` after which the next eigenvalue jumps most, up to
``MAX_CLUSTERS``); the same eigenvectors, scaled as scikit-learn's spectral embedding, are cut
by column-pivoted QR (scikit-learn's ``cluster_qr``).

A class of more than ``SAMPLE`` maps is clustered on a seeded random sample of ``SAMPLE`` of them;
every other map joins the cluster that most of its ``n_neighbors`` nearest sampled maps (in the
same pooled, unit-length features) belong to, as the k-NN graph would have linked it.  Everything
else (the class's and the clusters' mean maps, the shortcut test, outliers and examples) is
computed over all the maps, streamed a chunk (one shard) at a time: the memory a class takes is
bounded by the sample, whatever its size.

A cluster is flagged as a possible shortcut when all three hold:

* **small**: the spot of its mean map (the connected region around the peak where the mean is
  at least half its maximum) covers at most ``SMALL_AREA`` of the grid;
* **the same across the cluster**: the spot is hot (at least half the image's own maximum
  somewhere in it) in at least ``CONSISTENT`` of its images;
* **away from the usual region**: at most ``AWAY`` of the images of the other classes peak
  within ``NEAR`` (a fraction of the grid) of the spot's peak, i.e. the model does not look
  there for every class.  (Peaks, not mean maps: a model that learned a patch also looks at
  the empty corner of the other classes' images, for the patch's absence, so their mean map is
  warm on the patch too; their peaks are elsewhere.)  The other clusters of the same class are
  no reference: a class whose every image carries the patch splits into clusters that all look
  at it.  With a single class in the audit, they are the only reference there is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.sparse import diags
from scipy.sparse.linalg import eigsh

from .maps import peak_of, place

POOL = 16
#: a class with more maps than this is clustered on a seeded sample of this many (see the module doc)
SAMPLE = 5000
#: maps handled at a time by the per-map passes (bounds their temporary memory)
CHUNK = 1024
MAX_CLUSTERS = 8
MIN_CLUSTER = 3
SMALL_AREA = 0.1
CONSISTENT = 0.6
NEAR = 0.2
AWAY = 0.25


class MapSource(Protocol):
    """One class's maps as the passes read them (:class:`ArrayMaps`, or the audit's shards:
    :class:`convlens.audit.shards.ClassMaps`)."""

    def __len__(self) -> int: ...

    def chunks(self) -> Iterable[tuple[int, np.ndarray]]:
        """``(first position, maps (k, s, s))`` chunks covering every map once, in order."""
        ...

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The maps at sorted ``positions``."""
        ...


class ArrayMaps:
    """A :class:`MapSource` over ``(N, s, s)`` maps in memory."""

    def __init__(self, maps: np.ndarray):
        self.maps = maps

    def __len__(self) -> int:
        return len(self.maps)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, len(self.maps), CHUNK):
            yield s, np.asarray(self.maps[s:s + CHUNK], np.float32)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(self.maps[np.asarray(positions, np.int64)])


@dataclass
class Cluster:
    """One strategy of a class: its members (row positions), mean map and the shortcut verdict."""

    members: np.ndarray
    mean: np.ndarray
    size: int
    accuracy: float | None
    peak: tuple[float, float]
    flagged: bool
    why: str
    numbers: dict[str, float] = field(default_factory=dict)
    #: the verdict of the maps alone (small, consistent, away from the other classes' peaks): a hypothesis
    #: that the audit tests by intervention (:mod:`convlens.audit.interventions`), which then sets ``flagged``
    suspect: bool | None = None
    #: the maps' own words, kept when the interventions rewrite ``why`` (a second judgement starts from them)
    maps_why: str = ""

    def __post_init__(self) -> None:
        if self.suspect is None:
            self.suspect = self.flagged
        if not self.maps_why:
            self.maps_why = self.why

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "accuracy": self.accuracy, "flagged": self.flagged,
                "peak": [round(self.peak[0], 4), round(self.peak[1], 4)], "why": self.why}


def features(maps: np.ndarray, pool: int = POOL) -> np.ndarray:
    """``(N, s, s)`` maps -> ``(N, pool * pool)`` float32 unit-length rows (a flat map stays uniform).

    Done in chunks of ``CHUNK`` maps, so no full-size copy of the maps is made (the audit's memory
    stays flat whatever a class's size)."""
    n = len(maps)
    out = np.empty((n, pool * pool), np.float32)
    for s in range(0, n, CHUNK):
        t = torch.as_tensor(np.asarray(maps[s:s + CHUNK], np.float32)).clamp_min(0)
        if t.shape[-1] != pool:
            t = F.adaptive_avg_pool2d(t[:, None], (pool, pool))[:, 0]
        x = t.reshape(t.shape[0], -1).numpy().astype(np.float64)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x[norm[:, 0] <= 1e-12] = 1.0
        out[s:s + CHUNK] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def affinity(x: np.ndarray, n_neighbors: int):
    """The symmetrised k-nearest-neighbour connectivity graph (sparse, 0/1 weights)."""
    from sklearn import config_context  # here: scikit-learn takes a second to import
    from sklearn.neighbors import kneighbors_graph

    # the brute-force search works through the distance matrix in blocks of at most this many
    # MiB (scikit-learn's default is 1 GiB: with 10,000 maps a 400 MiB block, the audit's peak)
    with config_context(working_memory=32):
        a = kneighbors_graph(x, n_neighbors=n_neighbors, mode="connectivity", include_self=False)
    return (0.5 * (a + a.T)).tocsr()


def eigengap(a, max_k: int = MAX_CLUSTERS, vectors: bool = False):
    """The number of clusters by the eigengap of the normalised Laplacian, and its smallest eigenvalues
    (with ``vectors``, also the spectral embedding: the matching eigenvectors scaled by
    ``D^-1/2``, as scikit-learn's ``spectral_embedding``, one column per eigenvalue)."""
    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).ravel()
    dinv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    d = diags(dinv)
    m = d @ a @ d  # the normalised affinity: its largest eigenvalues are 1 - the Laplacian's smallest
    k = min(max_k + 1, n - 1)
    if n <= 64:
        vals, vecs = np.linalg.eigh(m.toarray())
        vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    else:
        vals, vecs = eigsh(m, k=k, which="LA", tol=1e-6, v0=np.ones(n) / np.sqrt(n))
        vals, vecs = vals[::-1], vecs[:, ::-1]
    lap = np.clip(1.0 - vals, 0.0, 2.0)
    gaps = np.diff(lap)
    chosen = int(np.argmax(gaps) + 1) if gaps.size else 1
    if vectors:
        return chosen, lap, vecs * dinv[:, None]
    return chosen, lap


def cluster_qr(embedding: np.ndarray) -> np.ndarray:
    """Labels from a spectral embedding by column-pivoted QR (Damle, Minden and Ying 2019; scikit-learn's
    ``assign_labels="cluster_qr"``): deterministic, no k-means restarts."""
    from scipy.linalg import qr, svd

    k = embedding.shape[1]
    _, _, piv = qr(embedding.T, pivoting=True)
    ut, _, v = svd(embedding[piv[:k], :].T)
    return np.abs(embedding @ (ut @ v.conj())).argmax(axis=1)


def neighbours(n: int) -> int:
    """The k of the k-nearest-neighbour graph of ``n`` maps (and of the vote of the unsampled ones)."""
    return int(min(max(5, round(np.log2(n) * 2)), n - 1))


def cluster_maps(maps: np.ndarray, *, max_k: int = MAX_CLUSTERS, n_neighbors: int | None = None,
                 seed: int = 0, feats: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Cluster labels ``(N,)`` for one class's maps and the number of clusters chosen.

    The spectral embedding is the eigenvectors the eigengap is read from (one sparse
    eigensolve, no second one with a factorisation of the Laplacian: scikit-learn's
    ``SpectralClustering`` on 10,000 maps held 400 MiB more at its peak); ``seed`` is kept for
    callers (the assignment is deterministic); ``feats``: the maps' :func:`features`, when the
    caller has them already."""
    n = maps.shape[0]
    if n < 2 * MIN_CLUSTER:
        return np.zeros(n, int), 1
    x = features(maps) if feats is None else feats
    nn = n_neighbors or neighbours(n)
    a = affinity(x, nn)
    del x
    k, _, emb = eigengap(a, min(max_k, n // MIN_CLUSTER), vectors=True)
    if k <= 1:
        return np.zeros(n, int), 1
    labels = cluster_qr(emb[:, :k])
    k = int(labels.max()) + 1 if len(labels) else 1
    counts = np.bincount(labels, minlength=k)
    # number clusters by size, largest first (stable across runs), dropping empty ones
    order = [c for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    rank = np.full(k, -1)
    rank[order] = np.arange(len(order))
    return rank[labels], len(order)


def spot(mean: np.ndarray, level: float = 0.5) -> np.ndarray:
    """The boolean mask of the connected region (4-neighbours) around the peak of ``mean`` where it
    is at least ``level`` of its maximum."""
    m = np.asarray(mean, np.float64)
    top = m.max()
    if not top > 0:
        return np.ones(m.shape, bool)
    regions, _ = ndimage.label(m >= level * top)
    return regions == regions[np.unravel_index(int(np.argmax(m)), m.shape)]


def hot_in(maps: np.ndarray, mask: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Per map of ``(N, h, w)``: is it at least ``level`` of its own maximum somewhere in ``mask``?
    (In chunks, without a float64 copy of the maps.)"""
    n = len(maps)
    out = np.zeros(n, bool)
    if not n or not mask.any():
        return out
    for s in range(0, n, CHUNK):
        m = np.asarray(maps[s:s + CHUNK])
        top = m.reshape(len(m), -1).max(axis=1).astype(np.float64)
        inside = np.maximum(m[:, mask].max(axis=1).astype(np.float64), 0.0)
        out[s:s + CHUNK] = (top > 0) & (inside >= level * top)
    return out


def judge(mean: np.ndarray, consistent: float, other_peaks: np.ndarray,
          reference: str = "the other classes") -> tuple[bool, str, dict[str, float]]:
    """The shortcut verdict for one cluster (its mean map; ``consistent``, the share of its images
    hot in the spot of the mean, :func:`hot_in`; the peaks of the images it is compared with) and
    its plain-language reason."""
    mask = spot(mean)
    area = float(mask.mean())
    px, py = peak_of(mean)
    where = place(px, py)
    nums = {"area": area, "consistent": consistent}
    if not len(other_peaks):
        return False, f"attention peaks at {where}; no other images to compare it with", nums
    others = float((np.hypot(other_peaks[:, 0] - px, other_peaks[:, 1] - py) <= NEAR).mean())
    nums["others"] = others
    small, same, away = area <= SMALL_AREA, consistent >= CONSISTENT, others <= AWAY
    if small and same and away:
        return True, (f"possible shortcut: {100 * consistent:.0f}% of these images look hard at one small spot "
                      f"({100 * area:.0f}% of the input) at {where} ({px:.2f}, {py:.2f}), where only "
                      f"{100 * others:.0f}% of the images of {reference} peak; look for a mark, tag or patch "
                      "there"), nums
    if not small:
        return False, f"attention spread over {100 * area:.0f}% of the input, strongest at {where}", nums
    if not same:
        return False, (f"attention on a small spot at {where}, but only {100 * consistent:.0f}% of "
                       "these images look there"), nums
    return False, (f"attention on {where}, where {100 * others:.0f}% of the images of {reference} peak "
                   "too: a region the model uses for every class"), nums


def sample_positions(n: int, sample: int | None, seed: int = 0) -> np.ndarray:
    """The sorted positions of the maps a class of ``n`` is clustered on: all of them, or a seeded
    random ``sample`` of them."""
    if sample is None or n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, int(sample), replace=False))


def _vote(neigh: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The label most of each row's neighbours ``(m, q)`` carry (ties: the larger cluster)."""
    counts = np.zeros((len(neigh), k), np.int32)
    np.add.at(counts, (np.repeat(np.arange(len(neigh)), neigh.shape[1]), labels[neigh].ravel()), 1)
    return counts.argmax(axis=1)


def _lowest(best: tuple[np.ndarray, np.ndarray], values: np.ndarray, positions: np.ndarray, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` (value, position) pairs with the lowest values so far, ties by position (as a
    stable argsort over all of them would pick)."""
    v = np.concatenate([best[0], values])
    pos = np.concatenate([best[1], positions])
    order = np.lexsort((pos, v))[:k]
    return v[order], pos[order]


@dataclass
class ClassSummary:
    """What the audit shows of one class: its mean map (each map at unit mass), its clusters, the
    positions (in the class) of its ``outliers`` (least like the class's mean) and of each
    cluster's ``examples`` (most like the cluster's mean)."""

    mean: np.ndarray
    clusters: list[Cluster]
    outliers: list[int]
    examples: list[list[int]]


def summarise_class(maps: MapSource | np.ndarray, peaks: np.ndarray, correct: np.ndarray | None,
                    other_peaks: np.ndarray, *, seed: int = 0, sample: int | None = SAMPLE,
                    outliers: int = 4, examples: int = 4) -> ClassSummary:
    """Cluster one class's maps (on at most ``sample`` of them; None: all) and summarise it, reading
    the maps in two streamed passes after the sample (see the module doc).  ``peaks`` ``(N, 2)``,
    ``correct`` ``(N,)`` bools or None (no labels), ``other_peaks``: the peaks of the images of the
    other classes of the audit (none: the class's other clusters stand in for them)."""
    src = ArrayMaps(maps) if isinstance(maps, np.ndarray) else maps
    n = len(src)
    other_peaks = np.asarray(other_peaks, np.float64).reshape(-1, 2)
    picked = sample_positions(n, sample, seed)
    sm = src.take(picked)
    fs = features(sm)
    lab_s, k = cluster_maps(sm, seed=seed, feats=fs)
    index = None
    if len(picked) == n:  # the whole class is in memory already (at most ``sample`` maps): no re-reads
        src = ArrayMaps(sm)
    elif k > 1:
        from sklearn import config_context
        from sklearn.neighbors import NearestNeighbors

        index = NearestNeighbors(n_neighbors=neighbours(len(picked))).fit(fs)
    del sm, fs
    in_sample = np.zeros(n, bool)
    in_sample[picked] = True
    labels = np.zeros(n, np.int64)
    labels[picked] = lab_s
    # pass 1: every map's cluster, the unit-mass sums of the class and of each cluster
    total = None
    sums = None
    for start, m in src.chunks():
        m = np.asarray(m, np.float64)
        rows = np.arange(start, start + len(m))
        if index is not None and not in_sample[rows].all():
            out = ~in_sample[rows]
            with config_context(working_memory=32):
                neigh = index.kneighbors(features(m[out]), return_distance=False)
            labels[rows[out]] = _vote(neigh, lab_s, k)
        unit = m / np.maximum(m.sum(axis=(1, 2), keepdims=True), 1e-12)
        if total is None:
            total, sums = np.zeros(m.shape[1:]), np.zeros((k, *m.shape[1:]))
        total += unit.sum(axis=0)
        lab = labels[rows]
        for c in np.unique(lab):
            sums[c] += unit[lab == c].sum(axis=0)
    if total is None:  # an empty class
        return ClassSummary(np.zeros((1, 1), np.float32), [], [], [])
    counts = np.bincount(labels, minlength=k)
    # clusters numbered by size, largest first (stable), empty ones dropped
    order = [c for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    rank = np.full(k, -1)
    rank[order] = np.arange(len(order))
    labels = rank[labels]
    means = [(sums[c] / counts[c]).astype(np.float32) for c in order]
    mean = (total / n).astype(np.float32)
    masks = [spot(mc) for mc in means]
    fm = features(mean[None])[0]
    fcs = [features(mc[None])[0] for mc in means]
    # pass 2: how many of each cluster are hot in its spot; the outliers; each cluster's examples
    hot = np.zeros(len(order), np.int64)
    empty = (np.zeros(0), np.zeros(0, np.int64))
    low = empty
    near = [empty for _ in order]
    for start, m in src.chunks():
        rows = np.arange(start, start + len(m))
        f = features(m)
        low = _lowest(low, f @ fm, rows, outliers)
        lab = labels[rows]
        for c in np.unique(lab):
            sel = np.flatnonzero(lab == c)
            hot[c] += int(hot_in(m[sel], masks[c]).sum())
            near[c] = _lowest(near[c], -(f[sel] @ fcs[c]), rows[sel], examples)
    clusters = []
    for c in range(len(order)):
        idx = np.flatnonzero(labels == c)
        consistent = hot[c] / len(idx)
        if len(other_peaks):
            flagged, why, nums = judge(means[c], consistent, other_peaks)
        else:
            flagged, why, nums = judge(means[c], consistent, peaks[labels != c], "its class's other strategies")
        if flagged and len(idx) < MIN_CLUSTER:
            flagged, why = False, f"only {len(idx)} image(s): too few to call a strategy ({why})"
        acc = float(correct[idx].mean()) if correct is not None and len(idx) else None
        clusters.append(Cluster(idx, means[c], len(idx), acc, peak_of(means[c]), flagged, why, nums))
    return ClassSummary(mean, clusters, [int(r) for r in low[1]], [[int(r) for r in e[1]] for e in near])


def strategies(maps: MapSource | np.ndarray, peaks: np.ndarray, correct: np.ndarray | None,
               other_peaks: np.ndarray, *, seed: int = 0, sample: int | None = SAMPLE) -> list[Cluster]:
    """The clusters of one class's maps ``(N, s, s)`` (or a :class:`MapSource`) with their images'
    peaks ``(N, 2)``; see :func:`summarise_class`."""
    return summarise_class(maps, peaks, correct, other_peaks, seed=seed, sample=sample).clusters
