"""Which layer to explain: the automatic target layer and checks of the ones asked for.

Every layer's output is read as a grid by the :class:`~convlens.probe.Probe` (channels-first,
channels-last, or patch tokens with their class/register tokens dropped; see
``convlens.probe.classify``); a layer it cannot read is refused here in one line that names one
that works, so no map is ever computed on the wrong axes.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ...errors import LayerError
from ...models import LensModel, load_model
from ...models.layers import LayerTable


def as_lens(model: Any) -> LensModel:
    """A :class:`LensModel` as it is, anything else through :func:`load_model`."""
    return model if isinstance(model, LensModel) else load_model(model)


def _mappable(table: LayerTable, name: str, shape: tuple[int, ...]) -> bool:
    return table.grid(name) is not None and len(shape) == 3 and shape[1] * shape[2] > 1


def _is_token_norm(module: nn.Module) -> bool:
    """A LayerNorm/RMSNorm over the last axis (a transformer block's norm), not a 2-D one."""
    name = type(module).__name__
    return ("LayerNorm" in name or "RmsNorm" in name or "RMSNorm" in name) and not name.endswith("2d")


def transformer_layer(lm: LensModel) -> str | None:
    """The layer practitioners explain a transformer at: the first norm of its last block (a
    module holding two token norms: ``blocks.11.norm1`` for timm ViT/DeiT/BEiT/EVA,
    ``encoder.layers.encoder_layer_11.ln_1`` for torchvision's ViT, ``layers.3.blocks.1.norm1``
    for Swin), when it reads as a grid and no convolution runs after the first block (in hybrids
    such as MaxViT or MobileViT, convolutions run in every stage: the last stage is used then).
    None for models without such blocks."""
    table = lm.layers()
    modules = dict(lm.module.named_modules())
    norms: dict[str, list[str]] = {}  # block -> its token norms, in the order they finish
    first_block_at = None
    last_conv_at = -1
    for i, (name, shape) in enumerate(table.completion):
        module = modules.get(name)
        if isinstance(module, nn.modules.conv._ConvNd) and table.grid(name) is not None:
            last_conv_at = i
        if module is None or not _is_token_norm(module) or not _mappable(table, name, shape) or "." not in name:
            continue
        block = name.rsplit(".", 1)[0]
        if name not in norms.setdefault(block, []):
            norms[block].append(name)
            if len(norms[block]) == 2 and first_block_at is None:
                first_block_at = i
    blocks = [b for b, ns in norms.items() if len(ns) >= 2]
    if not blocks or first_block_at is None or last_conv_at > first_block_at:
        return None
    return norms[blocks[-1]][0]


def default_layer(model: Any) -> str:
    """The automatic target layer.

    For a transformer, :func:`transformer_layer` (the last block's first norm).  Otherwise the last
    module (in the order forwards finish) whose output reads as a grid larger than 1x1, as
    TorchCAM's ``locate_candidate_layer`` does: ``bn2`` for EfficientNet-Lite0 (timm), ``layer4``
    for a torchvision ResNet, ``stages`` (its last stage) for ConvNeXt and MaxViT, ``features``
    (ending in ``norm5``, whose in-place ReLU the Probe sees) for DenseNet, ``backbone.layer4`` for
    a segmentation model.  The order comes from the layer table's forward (cached on the model).
    """
    lm = as_lens(model)
    table = lm.layers()
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in lm.module.modules())
    if not has_conv and not any(r.layout in ("nhwc", "tokens") for r in table.rows):
        # an all-dense model: its only "grids" are the input's rescaling, not features
        raise LayerError(f"{lm.name} has no convolutional layer to explain; pass layer=NAME explicitly "
                         "(list them with `convlens layers`)", param="layer")
    picked = transformer_layer(lm)
    if picked is not None:
        return picked
    modules = dict(lm.module.named_modules())
    done = table.completion
    if lm.task == "segmentation" and "backbone" in modules:  # the backbone's last stage, not the mask head
        done = [(n, s) for n, s in done if n.startswith("backbone.")] or done
    for name, shape in reversed(done):
        if _mappable(table, name, shape) and not isinstance(modules.get(name), nn.Identity):
            return name
    raise LayerError(f"{lm.name} has no layer whose output reads as a spatial grid larger than 1x1; "
                     "pass layer=NAME (list them with `convlens layers`)", param="layer")


def parse_layers(layer: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or a list of names to a list of names (empty names dropped)."""
    names = [p.strip() for p in ([layer] if isinstance(layer, str) else list(layer)) for p in str(p).split(",")]
    names = [n for n in names if n]
    if not names:
        raise LayerError("empty layer name", param="layer")
    return names


def cam_layers(model: Any) -> list[str]:
    """The layers :func:`check_layers` accepts, in the layer table's order: modules whose output
    reads as a grid larger than 1x1 (channels-first, channels-last or patch tokens). What the
    explorer's layer menu lists."""
    lm = as_lens(model)
    table = lm.layers()
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in table.completion:
        shapes.setdefault(name, shape)
    return [r.name for r in table.rows if r.name in shapes and _mappable(table, r.name, shapes[r.name])]


def check_layers(lm: LensModel, layers: Sequence[str]) -> list[str]:
    """Validate layer names: known modules whose output reads as a grid larger than 1x1; a layer
    that does not is refused in one line naming the automatic layer."""
    table = lm.layers()
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in table.completion:
        shapes.setdefault(name, shape)
    out = []
    for name in layers:
        lm.get_layer(name)  # unknown name -> LayerError with the closest names
        shape = shapes.get(name)
        if shape is None:
            raise LayerError(f"layer {name!r} does not output a tensor in the forward pass; "
                             f"choose a feature-map layer such as {default_layer(lm)!r}", param="layer")
        why = table.refusal(name)
        if why and len(shape) >= 3:
            raise LayerError(f"layer {name!r} cannot be read as a spatial grid ({why}); "
                             f"try {default_layer(lm)!r}", param="layer")
        if len(shape) != 3 or table.grid(name) is None:
            raise LayerError(f"layer {name!r} has no spatial output (its output is "
                             f"{'x'.join(map(str, shape)) or 'a scalar'}, not channels x height x width); "
                             f"try {default_layer(lm)!r}", param="layer")
        if shape[1] * shape[2] <= 1:
            raise LayerError(f"layer {name!r} outputs a 1x1 map ({'x'.join(map(str, shape))}); "
                             f"a CAM needs a spatial map, try {default_layer(lm)!r}", param="layer")
        if name not in out:
            out.append(name)
    return out
