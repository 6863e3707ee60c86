"""SpRAy on a class larger than its sample (issue 13: memory bounded whatever the data set's size):
the sampled maps keep the clusters the graph gave them, the others join their neighbours' cluster,
the streamed summary equals the in-memory one, and the shard-backed source reads what was written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convlens.audit import spray
from convlens.audit.shards import ClassMaps, class_maps, schema, write_manifest, write_shard
from convlens.audit.spray import ArrayMaps, cluster_maps, sample_positions, summarise_class


def blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` 32 x 32 maps: a fifth peak sharply on one corner spot, the rest broadly on random
    spots; their peaks; which are the corner ones."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    centres = rng.uniform(6, 26, (n, 2))
    corner = rng.random(n) < 0.2
    centres[corner] = (28, 4)
    width = np.where(corner, 18.0, 80.0)[:, None, None]
    maps = np.exp(-((xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2)
                  / width).astype(np.float32)
    maps += rng.uniform(0, 0.05, maps.shape).astype(np.float32)
    peaks = np.stack([(centres[:, 0] + 0.5) / 32, (centres[:, 1] + 0.5) / 32], axis=1)
    return maps, peaks, corner


def test_sample_positions_all_or_a_seeded_sorted_sample():
    assert np.array_equal(sample_positions(10, 20), np.arange(10))
    assert np.array_equal(sample_positions(10, None), np.arange(10))
    s = sample_positions(1000, 100, seed=3)
    assert len(s) == 100 == len(np.unique(s)) and np.all(np.diff(s) > 0) and s.max() < 1000
    assert np.array_equal(s, sample_positions(1000, 100, seed=3))
    assert not np.array_equal(s, sample_positions(1000, 100, seed=4))


def test_a_class_larger_than_the_sample_keeps_the_samples_clusters_and_finds_the_shortcut():
    maps, peaks, corner = blobs(1500)
    other = np.random.default_rng(1).uniform(0.2, 0.8, (500, 2))
    res = summarise_class(maps, peaks, None, other, sample=600)
    labels = np.full(len(maps), -1)
    for c, cl in enumerate(res.clusters):
        labels[cl.members] = c
    assert (labels >= 0).all() and sum(cl.size for cl in res.clusters) == len(maps)  # every map placed once
    # the sampled maps are in the clusters their own graph gave them (up to numbering)
    picked = sample_positions(len(maps), 600)
    own, k = cluster_maps(maps[picked])
    assert len(res.clusters) == k
    pairs = set(zip(own.tolist(), labels[picked].tolist()))
    assert len(pairs) == k  # a one-to-one renumbering
    # the planted corner: one flagged cluster, made of the corner maps, sampled or not
    flagged = [cl for cl in res.clusters if cl.flagged]
    assert len(flagged) == 1
    members = np.zeros(len(maps), bool)
    members[flagged[0].members] = True
    assert np.array_equal(members, corner)
    assert flagged[0].peak[0] > 0.8 and flagged[0].peak[1] < 0.2
    # means over all the members, not the sample only
    unit = maps / maps.sum(axis=(1, 2), keepdims=True)
    assert np.allclose(flagged[0].mean, unit[corner].mean(axis=0), atol=1e-6)
    assert np.allclose(res.mean, unit.mean(axis=0), atol=1e-6)


def test_the_summary_of_a_small_class_is_the_exact_one_whatever_the_chunks():
    maps, peaks, _ = blobs(400, seed=2)
    other = np.random.default_rng(1).uniform(0.2, 0.8, (300, 2))
    a = summarise_class(maps, peaks, None, other)

    class Uneven(ArrayMaps):  # chunks of 37: the streamed passes do not depend on where chunks end
        def chunks(self):
            for s in range(0, len(self.maps), 37):
                yield s, np.asarray(self.maps[s:s + 37], np.float32)

    b = summarise_class(Uneven(maps), peaks, None, other)
    assert [c.size for c in a.clusters] == [c.size for c in b.clusters]
    assert all(np.array_equal(x.members, y.members) and x.flagged == y.flagged for x, y in zip(a.clusters, b.clusters))
    assert a.outliers == b.outliers and a.examples == b.examples
    assert np.allclose(a.mean, b.mean, atol=1e-7)
    # the outliers are the maps least like the class mean, ties by position (a stable sort)
    f, fm = spray.features(maps), spray.features(a.mean[None])[0]
    assert a.outliers == np.argsort(f @ fm, kind="stable")[:4].tolist()
    for cl, ex in zip(a.clusters, a.examples):
        fc = spray.features(cl.mean[None])[0]
        assert ex == cl.members[np.argsort(-(f[cl.members] @ fc), kind="stable")[:4]].tolist()


def test_shard_backed_class_maps_read_one_class_across_shards(tmp_path: Path):
    out = tmp_path / "a"
    (out / "shards").mkdir(parents=True)
    write_manifest(out, {"format": "convlens-audit/1", "state": "running", "map_size": 8})
    rng = np.random.default_rng(0)
    klass = rng.integers(0, 3, 50)
    ok = rng.random(50) > 0.1
    maps = rng.random((50, 8, 8)).astype(np.float16)
    for k, (lo, hi) in enumerate([(0, 20), (20, 40), (40, 50)]):
        rows = {f.name: [None] * (hi - lo) for f in schema(8)}
        rows |= {"index": list(range(lo, hi)), "id": [f"i{i}" for i in range(lo, hi)], "ok": ok[lo:hi].tolist(),
                "error": [None if g else "bad" for g in ok[lo:hi]], "klass": klass[lo:hi].tolist(),
                "map": [m if g else None for m, g in zip(maps[lo:hi], ok[lo:hi])]}
        write_shard(out, k, rows, size=8)
    want = maps[(klass == 1) & ok]
    src = ClassMaps(out, 1)
    assert len(src) == len(want)
    assert np.array_equal(np.concatenate([m for _, m in src.chunks()]), want.astype(np.float32))
    assert [s for s, _ in src.chunks()] == np.cumsum([0, *[((klass[lo:hi] == 1) & ok[lo:hi]).sum()
                                                           for lo, hi in [(0, 20), (20, 40)]]]).tolist()
    pos = np.array([0, 3, len(want) - 1])
    assert np.array_equal(src.take(pos), want[pos])
    assert np.array_equal(class_maps(out, 1), want)


@pytest.mark.parametrize("sample", [None, 200])
def test_a_flat_class_stays_one_cluster(sample):
    maps = np.ones((300, 16, 16), np.float32)
    res = summarise_class(maps, np.full((300, 2), 0.5), np.ones(300, bool), np.zeros((0, 2)), sample=sample)
    assert len(res.clusters) == 1 and res.clusters[0].size == 300 and res.clusters[0].accuracy == 1.0
