"""Helpers for the web, browser and report tests: a tiny real training run, made once per session."""

from __future__ import annotations

import tempfile
from pathlib import Path

_RUNS: dict[str, Path] = {}

#: the origin test clients speak as: the explorer answers only local host names (``testserver``,
#: TestClient's default, is refused unless an app is told to allow it)
LOCAL = "http://localhost"


def local_client(app, **kwargs):
    """A TestClient of ``app`` that sends ``Host: localhost``, as a browser on this machine does."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=LOCAL, **kwargs)


def runs_root() -> Path:
    """A folder holding one real run directory ``digits-tiny``, trained once per test session.

    The run is what ``convlens train`` writes (config.json, weights.safetensors,
    history.csv, curves.png, metrics.json, splits.json), so the runs views and the
    run report read the real files.  A small CNN on scikit-learn's digits, 3 epochs.
    """
    if "root" not in _RUNS:
        from convlens.train import train

        root = Path(tempfile.mkdtemp(prefix="convlens-web-runs-"))
        train("digits", arch="conv16-pool-conv32-pool-gap", epochs=3, batch_size=64, seed=0,
              out=str(root / "digits-tiny"), progress=False)
        _RUNS["root"] = root
    return _RUNS["root"]
