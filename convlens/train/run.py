"""Run directories: what a training run leaves behind, and loading it back.

A run directory holds ``config.json`` (everything that rebuilds the model and its
data: arch, classes, input size, source, split, seed, options, library versions),
``splits.json`` (the train/val/test item lists), ``weights.safetensors``,
``history.csv``, ``curves.png`` and ``metrics.json``.  It is written into a
temporary sibling directory and renamed at the end, so a run is never half-written.

>>> lm = load_run_model("runs/faces")          # doctest: +SKIP
>>> lm.predict("face.pgm")                     # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, RunError

FILES = ("config.json", "splits.json", "weights.safetensors", "history.csv", "curves.png", "metrics.json")
HISTORY_FIELDS = ("phase", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "best")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("convlens", "torch", "torchvision", "timm", "lightning-fabric", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def check_out(out: str | os.PathLike, force: bool) -> Path:
    """Refuse an existing run directory unless ``force``; the parent must be creatable."""
    path = Path(out)
    if path.exists() and not force:
        raise RunError(f"--out {path}: already exists; choose another directory or pass --force to replace it")
    if path.exists() and not path.is_dir():
        raise RunError(f"--out {path}: exists and is not a directory")
    return path


class Run:
    """A trained model with its config, history and test metrics.

    ``run.model`` is a :class:`~convlens.models.LensModel`; ``run.save(dir)`` writes the run
    directory; ``Run.load(dir)`` reads one back; ``run.evaluate()`` gives the full evaluation.
    """

    def __init__(self, config: dict[str, Any], history: list[dict[str, Any]], metrics: dict[str, Any],
                 module: nn.Module, splits: dict[str, Any], path: Path | None = None):
        self.config = config
        self.history = history
        self.metrics = metrics
        self.module = module
        self.splits = splits
        self.path = path
        self._model = None

    def __repr__(self) -> str:
        acc = self.metrics.get("accuracy")
        return (f"Run({self.config['arch']['spec']!r}, classes={len(self.class_names)}, "
                f"test_accuracy={acc if acc is None else round(acc, 4)}, path={str(self.path) if self.path else None})")

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def model(self):
        """The trained model as a LensModel (raw-pixel preprocessing, the run's classes)."""
        if self._model is None:
            self._model = _lens_model(self.module, self.config, self.path)
        return self._model

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "metrics": self.metrics,
                "config": self.config, "history": self.history}

    def _repr_png_(self) -> bytes:
        from ..render.curves import plot_history

        buf = io.BytesIO()
        plot_history(self.history).savefig(buf, format="png")
        return buf.getvalue()

    def evaluate(self, **kwargs: Any):
        from .evaluate import evaluate

        return evaluate(self, **kwargs)

    # -- writing ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write the run directory atomically (temporary sibling, then rename)."""
        from safetensors.torch import save_file

        from ..render.curves import save_curves

        path = check_out(path, force)
        parent = path.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
        except OSError as exc:
            raise RunError(f"--out {path}: cannot create it ({exc.strerror or exc})") from None
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
            save_file(state, str(tmp / "weights.safetensors"), metadata={"format": "convlens-run"})
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2))
            (tmp / "splits.json").write_text(json.dumps(self.splits))
            (tmp / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
            with open(tmp / "history.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
                w.writeheader()
                for row in self.history:
                    w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
            save_curves(self.history, tmp / "curves.png",
                        title=f"{self.config['arch']['spec']} on {self.config['data'].get('spec', '')}")
            old = None
            if path.exists():
                old = parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = path
        self._model = None
        return path

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> "Run":
        path = Path(path)
        config = read_config(path)
        module = _build_module(path, config)
        history: list[dict[str, Any]] = []
        if (path / "history.csv").is_file():
            with open(path / "history.csv", newline="") as f:
                for row in csv.DictReader(f):
                    history.append({k: _parse_cell(v) for k, v in row.items()})
        metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
        splits = _read_json(path / "splits.json") if (path / "splits.json").is_file() else {}
        run = cls(config, history, metrics, module.to(device), splits, path)
        return run


def _parse_cell(v: str) -> Any:
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v) if v.lstrip("-").isdigit() else float(v)
    except ValueError:
        return v


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not readable JSON ({exc})") from None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a run directory, checked; RunError when it is not a run."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such run directory")
    if not path.is_dir():
        raise RunError(f"{path}: not a run directory (a file)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RunError(f"{path}: not a convlens run (no config.json; train one with `convlens train --out`)")
    config = _read_json(cfg_path)
    if not isinstance(config, dict) or config.get("format") != "convlens-run":
        raise RunError(f"{cfg_path}: not a convlens run config (no \"format\": \"convlens-run\")")
    for key in ("arch", "class_names", "input_size"):
        if key not in config:
            raise RunError(f"{cfg_path}: incomplete run config (missing {key!r})")
    if not (path / "weights.safetensors").is_file():
        raise RunError(f"{path}: incomplete run (no weights.safetensors)")
    return config


def _build_module(path: Path, config: dict[str, Any]) -> nn.Module:
    from safetensors.torch import load_file

    from .arch import build_arch

    c = int(config["input_size"][0])
    norm = config.get("normalization") or {}
    module = build_arch(config["arch"]["spec"], config["input_size"], len(config["class_names"]),
                        mean=norm.get("mean") or (0.5,) * c, std=norm.get("std") or (0.25,) * c,
                        pretrained=False)
    try:
        state = load_file(str(path / "weights.safetensors"))
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise RunError(f"{path / 'weights.safetensors'}: cannot read weights ({exc})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RunError(f"{path / 'weights.safetensors'}: weights do not fit the run's arch ({first})") from None
    if config["arch"].get("kind") == "spec":
        module = module.to(memory_format=torch.channels_last)
    return module.eval()


def _lens_model(module: nn.Module, config: dict[str, Any], path: Path | None, device: str = "cpu"):
    from ..models import LensModel, Preprocess

    c = int(config["input_size"][0])
    pre = Preprocess(input_size=tuple(config["input_size"]), mean=(0.0,) * c, std=(1 / 255,) * c,
                     interpolation="bilinear", crop_pct=1.0)
    name = path.name if path is not None else f"run:{config['arch']['spec']}"
    source = {"kind": "run", "path": str(path.resolve()) if path is not None else None}
    return LensModel(module, pre, config["class_names"], name=name, source=source, device=device).to(device)


def load_run_model(path: str | os.PathLike, device: str = "cpu"):
    """A run directory as a :class:`~convlens.models.LensModel` taking raw pixels.

    Its ``config`` is ``Preprocess(input_size=(C, H, W), mean=0, std=1/255, crop_pct=1.0)`` so
    that the usual transform (resize, to-tensor in [0, 1], normalise) yields 0..255 pixels.
    """
    path = Path(path)
    try:
        config = read_config(path)
    except RunError as exc:
        raise ModelError(str(exc)) from None
    return _lens_model(_build_module(path, config), config, path, device)
