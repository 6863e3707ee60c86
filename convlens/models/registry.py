"""The one door: :func:`load_model` resolves a name, a path or a module to a :class:`LensModel`
(like timm's ``create_model``), filled from below by the builders in :mod:`convlens.models.zoo`.

Names: ``effnet-lite0`` (default; also ``efficientnet-lite0``, ``effnet``, ``builtin``,
``default``), ``timm:NAME``, ``torchvision:NAME`` (or ``tv:NAME``), a run directory written by
``convlens train`` (``config.json`` inside), a checkpoint saved by :meth:`LensModel.save`
(``.safetensors`` + ``.json``), a live ``nn.Module`` (with optional preprocessing arguments) or a
LensModel (returned as it is, moved to ``device``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from . import zoo
from .arch import BUILTIN
from .lensmodel import LensModel

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def load_model(model: "str | os.PathLike | nn.Module | LensModel" = BUILTIN, *, weights: str | None = None,
               pretrained: bool = True, device: str = "cpu", num_classes: int | None = None,
               **module_kwargs: Any) -> LensModel:
    """Resolve a model name, path or module to a :class:`LensModel` in eval mode.

    >>> lm = load_model()                       # doctest: +SKIP
    >>> lm.predict("cat.jpg", top_k=3)          # doctest: +SKIP
    """
    device = resolve_device(device)
    if isinstance(model, LensModel):
        return model.to(device)
    if isinstance(model, nn.Module):
        return zoo.wrap_module(model, device=device, **module_kwargs)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"cannot make a model from {type(model).__name__}")
    spec = str(model).strip()
    if spec.lower() in zoo.MODEL_ALIASES:
        return zoo.builtin(device, weights=weights)
    if spec.startswith("timm:"):
        return zoo.timm_model(spec[5:], weights, pretrained, device, num_classes)
    if spec.startswith(("torchvision:", "tv:")):
        return zoo.torchvision_model(spec.split(":", 1)[1], weights, pretrained, device, num_classes)
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").is_file():
            return zoo.run_directory(path, device)
        raise ModelError(f"{path}: a directory but not a convlens run (no config.json)")
    if path.is_file():
        return zoo.checkpoint(path, device)
    if path.suffix in CHECKPOINT_SUFFIXES:
        raise ModelError(f"{path}: no such checkpoint file")
    raise ModelError(f"unknown model {spec!r}: use {zoo.describe_sources()}")


def resolve_device(device: str | torch.device) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is absent is an error."""
    d = str(device)
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {d}: CUDA is not available on this machine", param="device")
    return d
