"""Acceptance: trained models beat the issue's floors on the real data (../shared/data).

The faces runs (eyes, identity) are fast enough for every test run; MNIST, DeFungi and
the transfer/seed-architecture runs are marked ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convlens.models.arch import SEED_KERAS_ARCH
from convlens.train import train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACES = f"cmu-faces:{DATA / 'cmu_faces'}"


@pytest.mark.data
def test_faces_eyes_from_scratch_reaches_099():
    run = train(FACES, label="eyes", augment="rotate=10,translate=0.08,zoom=0.08,flip=h", epochs=25,
                batch_size=32, seed=0, progress=False)
    assert run.metrics["n_test"] == 125 and run.class_names == ["open", "sunglasses"]
    assert run.metrics["accuracy"] >= 0.99, run.metrics


@pytest.mark.data
def test_faces_identity_from_scratch_reaches_098(tmp_path):
    run = train(FACES, label="identity", augment="rotate=10,translate=0.1,zoom=0.1", epochs=20, seed=0,
                progress=False, out=str(tmp_path / "identity"))
    assert run.metrics["n_test"] == 125 and len(run.class_names) == 20
    assert run.metrics["accuracy"] >= 0.98, run.metrics
    # the run loads back and Grad-CAM on the trained model looks at the face, not the corners
    cam = pytest.importorskip("convlens.lens.cam")
    from convlens.data import load_source
    from convlens.models import load_model

    lm = load_model(str(tmp_path / "identity"))
    ds = load_source(FACES, label="identity")
    idx = ds.ids.index(run.splits["test"][0])
    ex = cam.explain(lm, ds.images[idx:idx + 1].float(), method="gradcam", target=int(ds.labels[idx]))
    heat = ex.heatmaps[0, 0]
    h, w = heat.shape
    centre = heat[h // 6: h - h // 6, w // 6: w - w // 6].mean()
    assert centre > heat.mean() * 0.9


@pytest.mark.data
@pytest.mark.slow
def test_seed_keras_arch_reaches_the_course_087():
    run = train(FACES, label="identity", arch=SEED_KERAS_ARCH, augment="rotate=10,translate=0.1,zoom=0.1",
                epochs=15, lr=1e-3, seed=0, progress=False)
    assert run.metrics["accuracy"] >= 0.87, run.metrics  # measured: 0.968


@pytest.mark.data
@pytest.mark.slow
def test_mnist_8020_from_scratch_reaches_099():
    run = train(f"mnist:{DATA / 'mnist'}", augment="rotate=8,translate=0.08", epochs=8, batch_size=64,
                val=0.05, test=0.2, seed=0, progress=False)
    assert run.metrics["n_test"] == 2000
    assert run.metrics["accuracy"] >= 0.99, run.metrics


@pytest.mark.data
@pytest.mark.slow
def test_defungi_frozen_builtin_backbone_reaches_095():
    run = train(f"folder:{DATA / 'defungi'}", arch="effnet-lite0", freeze=True, epochs=30, seed=0,
                progress=False)
    assert run.metrics["n_test"] == 312 and run.config["split"]["given_test"]
    assert run.metrics["accuracy"] >= 0.95, run.metrics


@pytest.mark.data
@pytest.mark.slow
def test_faces_identity_transfer_reaches_099():
    run = train(FACES, label="identity", arch="effnet-lite0", freeze=True, epochs=40, lr=3e-3, seed=0,
                progress=False)
    assert run.metrics["accuracy"] >= 0.99, run.metrics
