"""Architectures: a CNN built from a one-line spec, or a pretrained backbone with a new head, and
the freezing of layers for fine-tuning.

A spec is parsed and its size checked by :mod:`convlens.models.archspec` (the grammar is there);
the pretrained modules and the weights-file readers are in :mod:`convlens.models.weights`. Every
model built here takes **raw pixels** (0..255, like Keras's ``Rescaling`` layer) and rescales and
normalises inside itself, so a trained run needs no outside preprocessing; a transfer model repeats
grayscale inputs to RGB and resizes them to the backbone's own input size inside the model, with the
backbone's mean and std.

Every name this module held before it was split (the spec parser, the weights readers, the
pretrained modules) is still importable from here.

>>> net = build_arch("conv32-bn-pool-conv64-pool-gap-drop0.2", (1, 60, 64), 20)
>>> import torch
>>> net(torch.zeros(2, 1, 60, 64)).shape
torch.Size([2, 20])
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError, SpecError, closest
from .archspec import DEFAULT_ARCH, GRAMMAR, SEED_KERAS_ARCH, TOKEN, ArchInfo, check_input, check_spec, parse_arch
from .weights import (
    BUILTIN,
    BUILTIN_ALIASES,
    builtin_module,
    check_finite,
    hub_offline,
    load_weights,
    offline_hint,
    read_state_dict,
    timm_module,
    torchvision_module,
)

__all__ = [
    "ACTIVATIONS", "BUILTIN", "BUILTIN_ALIASES", "DEFAULT_ARCH", "GRAMMAR", "SEED_KERAS_ARCH", "TOKEN", "ArchInfo",
    "InputAdapter", "Rescale", "SpecNet", "TransferNet", "build_arch", "builtin_module", "check_finite",
    "check_input", "check_spec", "freeze_until", "frozen_modules", "hub_offline", "load_weights", "offline_hint",
    "parse_arch", "read_state_dict", "timm_module", "torchvision_module",
]

#: activation tokens -> their modules
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


# -- spec CNNs and transfer nets --------------------------------------------------------
class Rescale(nn.Module):
    """Raw pixels (0..255) to normalised floats: ``(x / 255 - mean) / std`` per channel.

    Args:
        mean: per channel, in 0..1 units.
        std: per channel, in 0..1 units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


class InputAdapter(nn.Module):
    """Raw pixels to a backbone's input: 0..1, gray to RGB, resize, normalise.

    Args:
        channels: the backbone's input channels (a one-channel input is repeated to them).
        size: the backbone's input ``(H, W)`` (other sizes are resized, bilinear and antialiased).
        mean: the backbone's per-channel mean, in 0..1 units.
        std: the backbone's per-channel standard deviation, in 0..1 units.
    """

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
    """A CNN built from a spec: ``rescale`` -> ``features`` -> ``head`` (ends in ``classifier``).

    Args:
        rescale: raw pixels to the normalised input (:class:`Rescale`).
        features: the convolutional part, run channels-last.
        head: flattening or global pooling, the fc layers and the classifier.
    """

    def __init__(self, rescale: nn.Module, features: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.rescale = rescale
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: oneDNN's faster path for these small convolutions on CPU (bench/RESULTS.md)
        x = self.rescale(x).contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x))


class TransferNet(nn.Module):
    """A pretrained timm backbone behind an :class:`InputAdapter`, with a new classifier.

    Args:
        adapter: raw pixels to the backbone's input.
        backbone: the timm model, its classifier already reset to the classes.
    """

    def __init__(self, adapter: InputAdapter, backbone: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features before the classifier (what the frozen path caches).

        Args:
            x: raw-pixel images ``(N, C, H, W)``.

        Returns:
            torch.Tensor: ``(N, features)``.
        """
        b = self.backbone
        return b.forward_head(b.forward_features(self.adapter(x)), pre_logits=True)

    @property
    def classifier(self) -> nn.Module:
        return self.backbone.get_classifier()


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
        m = TOKEN.match(tok)
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
                raise SpecError(f"arch {spec!r}: token {tok!r} at position {i + 1} comes after flattening",
                                param="arch")
            k = int(m.group("pk") or 2)
            cls = nn.AvgPool2d if m.group("pool") == "avgpool" else nn.MaxPool2d
            feats[name("pool")] = cls(k)
            check_size(tok, i, "remove a pooling step")
        elif m.group("word") in ("gap", "gmp"):
            if not spatial:
                raise SpecError(f"arch {spec!r}: token {tok!r} at position {i + 1} comes after flattening",
                                param="arch")
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
    """Build the module an ``arch`` names, taking raw-pixel inputs (0..255).

    Args:
        spec: an ``arch`` string (:func:`~convlens.models.archspec.parse_arch`) or its parsed form.
        input_size: the inputs' ``(C, H, W)``.
        num_classes: the classifier's outputs.
        mean: the data's per-channel mean in 0..1 units that a spec CNN normalises with (default
            0.5); transfer backbones use their own.
        std: the data's per-channel standard deviation in 0..1 units (default 0.25).
        pretrained: start a transfer backbone from its pretrained weights (else random).

    Returns:
        nn.Module: a :class:`SpecNet` or a :class:`TransferNet`.

    Raises:
        SpecError: a bad spec, or a network too large or shrinking the input to nothing.
        ModelError: a transfer backbone that cannot be built or fetched.
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
    """Freeze a layer and every layer before it (``requires_grad=False``).

    "Before" is the order the modules are registered in, which for the spec CNNs and the
    backbones is the order of the forward pass (``features.conv1`` ... ``head.classifier``).
    A layer without parameters (a pool) freezes everything registered before it.

    Args:
        module: the model, changed in place.
        layer: a module name of ``module`` (``convlens layers`` lists them).

    Returns:
        list[str]: the names of the parameters frozen, in order.

    Raises:
        SpecError: ``param="freeze_until"``: an unknown name (the closest names suggested), or one
            that would freeze every parameter (the classifier too), leaving nothing to train.
    """
    names = [n for n, _ in module.named_modules() if n]
    if not isinstance(layer, str) or layer not in names:
        raise SpecError(f"freeze_until {layer!r}: no such layer{closest(str(layer), names)} "
                        f"(`convlens layers` lists them)", param="freeze_until")
    order = {n: i for i, n in enumerate(names)}
    # the position of the last module that belongs to ``layer`` (itself or one of its children)
    last = max(i for n, i in order.items() if n == layer or n.startswith(layer + "."))
    frozen = []
    for pname, _ in module.named_parameters():
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
    """The modules to keep in eval mode while training, so that a frozen batch norm keeps its
    running statistics too.

    Args:
        module: the model.
        frozen: parameter names, as :func:`freeze_until` returns them.

    Returns:
        list[nn.Module]: the modules all of whose own parameters are in ``frozen`` (none when it is
            empty).
    """
    if not frozen:
        return []
    frozen_set = set(frozen)
    out = []
    for name, m in module.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False)]
        if own and all(p in frozen_set for p in own):
            out.append(m)
    return out
