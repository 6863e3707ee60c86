"""A Keras model as a :class:`~convlens.models.lensmodel.LensModel`: its preprocessing read from
the model, its layers behind the adapters of :mod:`convlens.models.keras.adapters`, its class names
from the arguments, a file beside it or the defaults.

Preprocessing from the model: the input shape (grayscale when it has one channel), raw 0-255 pixels
when the model starts with a ``Rescaling`` layer, else pixels in ``[0, 1]`` (what ``x / 255``
course notebooks fed); ``scale``/``mean``/``std`` override it: the model is fed
``(pixel * scale - mean) / std`` with pixels in ``0..255``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ...errors import ModelError, SpecError
from ...options import MAX_IMAGE_SIDE
from ..labels import default_labels, read_class_names, side_class_names
from ..lensmodel import LensModel
from ..preprocess import Preprocess
from .adapters import KerasNet
from .load import import_keras, is_model

#: Keras layers at a model's start that leave its input's pixel scale to the layers after them.
INPUT_LAYERS = ("Rescaling", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom",
                "RandomTranslation", "RandomContrast", "RandomCrop")


def _first_layers(model: Any) -> list[Any]:
    """The layers a model starts with (through nested models at the front)."""
    out = []
    layers = list(getattr(model, "layers", []))
    while layers:
        first = layers[0]
        if type(first).__name__ == "InputLayer":
            layers = layers[1:]
            continue
        out.append(first)
        if is_model(first):
            layers = list(first.layers)
            continue
        if type(first).__name__ in INPUT_LAYERS:
            layers = layers[1:]
            continue
        break
    return out


def keras_preprocess(model: Any, scale: float | None = None, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> Preprocess:
    """The model's input size and pixel scale (see the module docstring).

    Args:
        model: a built Keras model taking ``(batch, height, width, channels)`` images.
        scale: the model is fed ``pixel * scale`` for pixels in ``0..255`` (default: 1 after a
            ``Rescaling`` layer at its start, else 1/255).
        mean: subtracted after scaling: one number or one per channel (default 0).
        std: divided by after subtracting ``mean``: one positive number or one per channel
            (default 1).

    Returns:
        Preprocess: what feeds the model those values (squashed to its input size, bilinear).

    Raises:
        ModelError: the model does not take 1- or 3-channel images of at most
            :data:`~convlens.options.MAX_IMAGE_SIDE` pixels a side.
        SpecError: a bad ``scale``, ``mean`` or ``std``.
    """
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else (None, None, None, 3)
    if len(shape) != 4:
        raise ModelError(f"the Keras model takes inputs of shape {shape}; convlens needs images "
                         "(batch, height, width, channels)")
    h, w, c = shape[1] or 224, shape[2] or 224, shape[3] or 3
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ModelError(f"the Keras model takes {w}x{h} inputs; convlens handles at most {MAX_IMAGE_SIDE} pixels "
                         "a side")
    if c not in (1, 3):
        raise ModelError(f"the Keras model takes {c}-channel images; convlens reads grayscale (1) or RGB (3)")
    rescales = any(type(layer).__name__ == "Rescaling" for layer in _first_layers(model))
    if scale is None:
        scale = 1.0 if rescales else 1 / 255
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise SpecError(f"scale must be a positive number (got {scale!r})", param="scale")
    mean_t = channel_values(mean, c, "mean", 0.0)
    std_t = channel_values(std, c, "std", 1.0)
    if any(s <= 0 for s in std_t):
        raise SpecError(f"std must be positive (got {list(std_t)})", param="std")
    k = 255.0 * float(scale)  # the model gets (p * 255 * scale - mean) / std for p in [0, 1]
    return Preprocess(input_size=(int(c), int(h), int(w)), mean=tuple(m / k for m in mean_t),
                      std=tuple(s / k for s in std_t), interpolation="bilinear", crop_pct=1.0,
                      crop_mode="squash")


def channel_values(values: Sequence[float] | float | None, c: int, name: str, default: float) -> tuple[float, ...]:
    """One value per channel.

    Args:
        values: one number, ``c`` numbers, or None.
        c: the number of channels.
        name: the parameter the errors name (``mean``, ``std``).
        default: the value of every channel when ``values`` is None.

    Returns:
        tuple[float, ...]: ``c`` finite floats (one number repeated ``c`` times).

    Raises:
        SpecError: values that are not numbers, not finite, or neither 1 nor ``c`` of them.
    """
    if values is None:
        return (default,) * c
    vals = (values,) if isinstance(values, (int, float)) else tuple(values)
    try:
        vals = tuple(float(v) for v in vals)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be numbers (got {values!r})", param=name) from None
    if len(vals) == 1:
        vals = vals * c
    if len(vals) != c or not all(math.isfinite(v) for v in vals):
        raise SpecError(f"{name} needs {'1 value' if c == 1 else f'1 or {c} values'} (finite) for a {c}-channel model "
                        f"(got {list(vals)})", param=name)
    return vals


def wrap_keras(model: Any, *, path: Path | None = None, classes: "str | os.PathLike | Sequence[str] | None" = None,
               scale: float | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               device: str = "cpu") -> LensModel:
    """A Keras model as a :class:`~convlens.models.lensmodel.LensModel` (see the module docstring).

    Args:
        model: a built Keras model (on the torch backend) with one ``(batch, classes)`` output.
        path: the file it was read from (its name, and the class-name files beside it).
        classes: a class-name file (:func:`~convlens.models.labels.read_class_names`) or the names
            themselves; default: a file beside ``path``, else
            :func:`~convlens.models.labels.default_labels`.
        scale: see :func:`keras_preprocess`.
        mean: see :func:`keras_preprocess`.
        std: see :func:`keras_preprocess`.
        device: the torch device the LensModel runs on.

    Returns:
        LensModel: the model, its ``source`` saying ``kind="keras"`` and the output activation
            turned into scores.

    Raises:
        ModelError: Keras is unusable, the model has no known input shape, or it is not a classifier
            with one ``(batch, classes)`` output.
        SpecError: bad preprocessing values, or class names that do not fit the outputs.
    """
    keras = import_keras()
    if not getattr(model, "built", True) or not getattr(model, "inputs", None):
        raise ModelError("the Keras model has no known input shape; build it (keras.Input((H, W, C))) "
                         "or call it once before passing it to convlens")
    pre = keras_preprocess(model, scale=scale, mean=mean, std=std)
    with keras.device("cpu"):
        net = KerasNet(model)
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(1, *pre.input_size))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError(f"the Keras model's output is {tuple(getattr(out, 'shape', ()))}; convlens explains "
                         "classifiers with one (batch, classes) output")
    n = int(out.shape[-1])
    if classes is None:
        names = (side_class_names(path, n) if path is not None else None) or default_labels(n)
    elif isinstance(classes, (str, os.PathLike)):
        names = read_class_names(classes, n)
    else:
        names = [str(c) for c in classes]
        if len(names) != n:
            raise SpecError(f"{len(names)} class names for a model with {n} outputs", param="classes")
    source = {"kind": "keras", "path": str(path) if path else None, "class": type(model).__name__,
              "output_activation": net.output_activation}
    return LensModel(net, pre, names, name=path.name if path else str(model.name), source=source,
                     device=device, channels_last=False)
