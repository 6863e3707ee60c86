"""Shared fixtures: the real data folder, the built-in model, sample photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CONVLENS_DATA", ROOT.parent / "shared" / "data"))
PHOTOS = DATA / "photos"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    """Skip `data` tests with a clear reason when ../shared/data is absent."""
    if DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real data folder {DATA} is absent (a fresh clone has no ../shared/data)")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    return DATA


@pytest.fixture(scope="session")
def photos() -> Path:
    if not PHOTOS.is_dir():
        pytest.skip(f"real photos folder {PHOTOS} is absent")
    return PHOTOS


@pytest.fixture(scope="session")
def builtin_model():
    """The built-in EfficientNet-Lite0 (real ImageNet weights, offline), loaded once."""
    from convlens.models import load_model

    return load_model()


@pytest.fixture
def reuse_builtin(builtin_model, monkeypatch):
    """``reuse_builtin(cmd)``: let the CLI command module ``cmd`` reuse the session's built-in model
    instead of loading it again; returns that model."""

    def patch(cmd):
        real = cmd.load

        def load(model, weights=None, device="cpu"):
            return builtin_model if model == "effnet-lite0" and weights is None else real(model, weights, device)

        monkeypatch.setattr(cmd, "load", load)
        return builtin_model

    return patch


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's sample photos saved as PNG files (ship offline with the package)."""
    from PIL import Image
    from skimage import data

    out = tmp_path_factory.mktemp("skimage_photos")
    paths = {}
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        arr = getattr(data, name)()
        p = out / f"{name}.png"
        Image.fromarray(np.asarray(arr)).save(p)
        paths[name] = p
    return paths
