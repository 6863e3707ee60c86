"""The Ray engine of the audit (issue 13): a local Ray with 2 CPUs gives the same per-image
predictions and maps as the local engine, and the same Parquet schema."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'convlens[ray]')")

import convlens as cl  # noqa: E402
from convlens.audit import audit, read_shards  # noqa: E402
from convlens.audit.shards import maps_of  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]
CLASSES = ["dark", "light"]


@pytest.fixture(scope="module")
def local_ray():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()
        for sig, handler in saved.items():  # ray.init installs its own and shutdown leaves them
            signal.signal(sig, handler)


def tiny_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    return cl.load_model(net, input_size=(3, 24, 24), class_names=CLASSES)


def test_a_ray_it_starts_is_stopped_and_the_signal_handlers_are_given_back(tmp_path):
    # runs before the module's shared Ray starts: the engine starts its own local Ray here
    assert not ray.is_initialized()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    (tmp_path / "data" / "dark").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(tmp_path / "data" / "dark" / f"{i}.png")
    result = audit(tiny_model(), tmp_path / "data", out=tmp_path / "ray", engine="ray", workers=1, batch_size=2)
    assert result.to_dict()["images"] == 2
    assert not ray.is_initialized()
    assert {sig: signal.getsignal(sig) for sig in before} == before  # Ctrl-C and SIGTERM behave as before


def test_ray_engine_matches_the_local_engine(local_ray, tmp_path):
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(8):
            a = np.clip(rng.normal(80 + 90 * c, 40, (24, 28, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "light" / "broken.png").write_bytes(b"nope")
    lm = tiny_model()
    with pytest.warns(UserWarning):
        local = audit(lm, tmp_path / "data", out=tmp_path / "local", shard_size=4, batch_size=4)
    with pytest.warns(UserWarning):
        remote = audit(lm, tmp_path / "data", out=tmp_path / "ray", engine="ray", workers=2, shard_size=4,
                       batch_size=4)
    assert ray.is_initialized()  # a Ray it did not start is left running
    a, b = read_shards(tmp_path / "local"), read_shards(tmp_path / "ray")
    assert a.schema == b.schema and a.num_rows == b.num_rows == 17
    for col in ("index", "id", "ok", "error", "label", "klass", "pred", "topk_index", "width", "height"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    for col in ("prob_pred", "peak_x", "peak_y", "centre", "border", "spread", "area50"):
        np.testing.assert_allclose(np.asarray(a.column(col).to_pylist(), float),
                                   np.asarray(b.column(col).to_pylist(), float), atol=1e-4, equal_nan=True)
    for col in ("map", "map_pred"):
        np.testing.assert_allclose(maps_of(a, col), maps_of(b, col), atol=2e-3)
    assert remote.to_dict()["images"] == local.to_dict()["images"] == 16
    assert [c["n"] for c in remote.to_dict()["classes"]] == [c["n"] for c in local.to_dict()["classes"]]
    assert remote.to_dict()["skipped"] == local.to_dict()["skipped"]


def test_ray_interventions_give_the_local_findings(local_ray, tmp_path):
    """Issue 29: the interventions run as batched forwards on the Ray workers, write the same table and
    give the same findings as the local engine."""
    import pyarrow.parquet as pq

    from test_shortcuts import synthetic

    x, y = synthetic(0, True, n=60)
    for c, name in enumerate(["flat", "tall"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in np.flatnonzero(y == c)[:40]:
            Image.fromarray(x[i]).save(tmp_path / "data" / name / f"{i}.png")
    run = cl.train((x, y), class_names=["flat", "tall"], arch="conv8-pool-fc32", epochs=3, batch_size=32,
                   progress=False, val=0.1, test=0.1, seed=0, out=str(tmp_path / "run"))
    lm = run.model()
    for how in ("mean", "inpaint"):  # inpainting draws noise: seeded per test and place, on either engine
        local = audit(lm, tmp_path / "data", out=tmp_path / "local", shard_size=32, replace=how)
        remote = audit(lm, tmp_path / "data", out=tmp_path / "ray", engine="ray", workers=2, shard_size=32,
                       replace=how)
        a = pq.read_table(tmp_path / "local" / "interventions.parquet")
        b = pq.read_table(tmp_path / "ray" / "interventions.parquet")
        assert a.schema == b.schema and a.num_rows == b.num_rows > 0
        for col in ("kind", "test", "position", "index", "klass", "target", "pred_before", "pred_after"):
            assert a.column(col).to_pylist() == b.column(col).to_pylist(), (how, col)
        np.testing.assert_allclose(np.asarray(a.column("prob_after").to_pylist(), float),
                                   np.asarray(b.column("prob_after").to_pylist(), float), atol=1e-4)
        assert local.findings and any(f["class"] == "flat" and not isinstance(f["region"], str)
                                      for f in local.findings)
        assert {f["replace"] for f in local.findings if not isinstance(f["region"], str)} == {how}
        strip = lambda fs: [{k: v for k, v in f.items() if k != "why"} for f in fs]  # noqa: E731
        assert strip(remote.findings) == strip(local.findings)
        assert [f["why"][:60] for f in remote.findings] == [f["why"][:60] for f in local.findings]
