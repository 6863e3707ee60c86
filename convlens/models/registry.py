"""The one door: :func:`load_model` resolves a name, a path or a module to a :class:`LensModel`
(like timm's ``create_model``), filled from below by the builders in :mod:`convlens.models.zoo`.

Names: ``effnet-lite0`` (default; also ``efficientnet-lite0``, ``effnet``, ``builtin``,
``default``), ``timm:NAME``, ``torchvision:NAME`` (or ``tv:NAME``), a run directory written by
``convlens train`` (``config.json`` inside), a checkpoint saved by :meth:`LensModel.save`
(``.safetensors`` + ``.json``), a Keras model file (``.keras``, ``.h5``: Keras 3 on its torch
backend, see :mod:`convlens.models.keras`) or a live Keras model, a live ``nn.Module`` (with
optional preprocessing arguments) or a LensModel (returned as it is, moved to ``device``).

``classes`` (a file of names, or a list), ``scale``, ``mean`` and ``std`` apply to every source:
class names replace the model's (their number must match its outputs); ``mean``/``std`` (and for
Keras models ``scale``: the model is fed ``(pixel * scale - mean) / std``, pixels 0-255) replace
its normalisation.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ModelError, SpecError
from . import zoo
from .arch import BUILTIN
from .keras import KERAS_SUFFIXES, channel_values, is_keras_model
from .labels import read_class_names
from .lensmodel import LensModel

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def load_model(model: "str | os.PathLike | nn.Module | LensModel" = BUILTIN, *, weights: str | None = None,
               pretrained: bool = True, device: str = "cpu", num_classes: int | None = None,
               classes: "str | os.PathLike | Sequence[str] | None" = None, scale: float | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               **module_kwargs: Any) -> LensModel:
    """Resolve a model name, path or module to a :class:`LensModel` in eval mode.

    >>> lm = load_model()                       # doctest: +SKIP
    >>> lm.predict("cat.jpg", top_k=3)          # doctest: +SKIP
    >>> lm = load_model("model.h5", classes="classes.txt")   # doctest: +SKIP
    """
    device = resolve_device(device)
    if is_keras_model(model):  # before nn.Module: on the torch backend a Keras model is one
        return zoo.keras_model(model, device=device, classes=classes, scale=scale, mean=mean, std=std)
    if isinstance(model, nn.Module) and not isinstance(model, LensModel):
        if mean is not None:
            module_kwargs["mean"] = mean
        if std is not None:
            module_kwargs["std"] = std
        if classes is not None and not isinstance(classes, (str, os.PathLike)):
            module_kwargs.setdefault("class_names", list(classes))
            classes = None
        return adjust(zoo.wrap_module(model, device=device, **module_kwargs), classes, scale)
    keras_opts = {"classes": classes, "scale": scale, "mean": mean, "std": std}
    lm = _resolve(model, weights, pretrained, device, num_classes, keras_opts)
    if lm.source.get("kind") == "keras" and not isinstance(model, LensModel):
        return lm  # the options were applied while wrapping it
    return adjust(lm, classes, scale, mean, std)


def _resolve(model: Any, weights: str | None, pretrained: bool, device: str, num_classes: int | None,
             keras_opts: dict[str, Any]) -> LensModel:
    if isinstance(model, LensModel):
        return model.to(device)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"cannot make a model from {type(model).__name__}")
    spec = str(model).strip()
    if spec.lower() in zoo.MODEL_ALIASES:
        if not pretrained and not weights:  # never a silently pretrained model when random weights were asked
            raise ModelError(f"{spec}: the built-in model always has its ImageNet weights; for its architecture "
                             "with random weights use timm:tf_efficientnet_lite0 with pretrained off "
                             "(--no-pretrained)")
        return zoo.builtin(device, weights=weights)
    if spec.startswith("timm:"):
        return zoo.timm_model(spec[5:], weights, pretrained, device, num_classes)
    if spec.startswith(("torchvision:", "tv:")):
        return zoo.torchvision_model(spec.split(":", 1)[1], weights, pretrained, device, num_classes)
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").is_file():
            return zoo.run_directory(path, device)
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            raise ModelError(f"{path}: a TensorFlow SavedModel folder, which convlens cannot read; re-save it "
                             "as a Keras file: model = tf.keras.models.load_model(DIR); model.save('model.keras') "
                             "(or 'model.h5')")
        raise ModelError(f"{path}: a directory but not a convlens run (no config.json)")
    if path.suffix.lower() in KERAS_SUFFIXES:
        if not path.is_file():
            raise ModelError(f"{path}: no such Keras model file")
        return zoo.keras_file(path, device, **keras_opts)
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES and not path.with_suffix(".json").is_file():
            raise ModelError(f"{path}: not a model file convlens reads: a Keras .keras or .h5 file, a checkpoint "
                             "(.safetensors with its .json) or a run directory")
        return zoo.checkpoint(path, device)
    if path.suffix in CHECKPOINT_SUFFIXES:
        raise ModelError(f"{path}: no such checkpoint file")
    raise ModelError(f"unknown model {spec!r}: use {zoo.describe_sources()}")


def adjust(lm: LensModel, classes: "str | os.PathLike | Sequence[str] | None" = None, scale: float | None = None,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> LensModel:
    """``lm`` with the class names and normalisation given (those not given kept)."""
    if classes is not None:
        if isinstance(classes, (str, os.PathLike)):
            names = read_class_names(classes, lm.num_classes)
        else:
            names = [str(c) for c in classes]
            if len(names) != lm.num_classes:
                raise SpecError(f"{len(names)} class names for a model with {lm.num_classes} outputs",
                                param="classes")
        lm.class_names = names
    if scale is not None:
        raise SpecError("scale applies to Keras models (their input is pixel * scale); for other models "
                        "give mean and std on [0, 1] pixels", param="scale")
    if mean is not None or std is not None:
        c = lm.config.channels
        m = channel_values(mean, c, "mean", 0.0) if mean is not None else lm.config.mean
        s = channel_values(std, c, "std", 1.0) if std is not None else lm.config.std
        if any(v <= 0 for v in s):
            raise SpecError(f"std must be positive (got {list(s)})", param="std")
        lm.config = replace(lm.config, mean=m, std=s)
    return lm


def resolve_device(device: str | torch.device) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device that is absent is an error."""
    d = str(device)
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {d}: CUDA is not available on this machine", param="device")
    return d
