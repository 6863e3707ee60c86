"""Which layer to explain: the automatic target layer and checks of the ones asked for."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ...errors import LayerError
from ...models import LensModel, load_model


def as_lens(model: Any) -> LensModel:
    """A :class:`LensModel` as it is, anything else through :func:`load_model`."""
    return model if isinstance(model, LensModel) else load_model(model)


def default_layer(model: Any) -> str:
    """The automatic target layer: the last module (in the order forwards finish) whose
    output is a feature map larger than 1x1, as TorchCAM's ``locate_candidate_layer`` does.

    ``bn2`` for EfficientNet-Lite0 (timm), ``layer4`` for a torchvision ResNet.  The order
    comes from the layer table's forward (computed once, cached on the model).
    """
    lm = as_lens(model)
    order = lm.layers().completion
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in lm.module.modules())
    if not has_conv:
        raise LayerError(f"{lm.name} has no convolutional layer to explain; pass layer=NAME explicitly "
                         "(list them with `convlens layers`)", param="layer")
    for name, shape in reversed(order):
        if len(shape) == 3 and (shape[1] > 1 or shape[2] > 1):
            return name
    raise LayerError(f"{lm.name} has no layer with a spatial output larger than 1x1; pass layer=NAME",
                     param="layer")


def parse_layers(layer: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or a list of names to a list of names (empty names dropped)."""
    names = [p.strip() for p in ([layer] if isinstance(layer, str) else list(layer)) for p in str(p).split(",")]
    names = [n for n in names if n]
    if not names:
        raise LayerError("empty layer name", param="layer")
    return names


def check_layers(lm: LensModel, layers: Sequence[str]) -> list[str]:
    """Validate layer names: known modules with a (C, H, W) output larger than 1x1."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in lm.layers().completion:
        shapes.setdefault(name, shape)
    out = []
    for name in layers:
        lm.get_layer(name)  # unknown name -> LayerError with the closest names
        shape = shapes.get(name)
        if shape is None:
            raise LayerError(f"layer {name!r} does not output a tensor in the forward pass; "
                             "choose a feature-map layer", param="layer")
        if len(shape) != 3:
            raise LayerError(f"layer {name!r} has no spatial output (its output is "
                             f"{'x'.join(map(str, shape)) or 'a scalar'}, not channels x height x width); "
                             f"try {default_layer(lm)!r}", param="layer")
        if shape[1] * shape[2] <= 1:
            raise LayerError(f"layer {name!r} outputs a 1x1 map ({'x'.join(map(str, shape))}); "
                             f"a CAM needs a spatial map, try {default_layer(lm)!r}", param="layer")
        if name not in out:
            out.append(name)
    return out
