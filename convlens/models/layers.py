"""The layer table: Keras' ``summary()`` for any PyTorch model.

One real forward at the model's input size (in eval mode), with a
:class:`~convlens.probe.Probe` on every module, records each module's output
shape.  The same pass notes which modules' outputs are later modified in place
(``tensor._version`` changes, e.g. ``out += x`` followed by
``ReLU(inplace=True)`` in a ResNet), so probes know which captures must be
copied and which can be kept by reference, and the order in which the modules'
forwards finish (``completion``: what the automatic CAM layer is chosen from).

Like Keras' ``summary()``, the table leaves out modules that do nothing: ``nn.Identity``
placeholders and parameter-free modules the forward never calls (a block's unused
``drop_path``); they stay reachable by name (``table["blocks.0.0.se"]``) and are listed in
``table.hidden``.  ``str(table)`` prints output shapes with the batch as ``None`` and the
trainable and non-trainable counts, naming what is frozen.

Shapes are ``(C, H, W)`` as every view sees them. A model whose own layout is channels-last (a
Keras model, whose wrapper says ``native_layout = "channels_last"``) keeps that in
``table.layout``, and ``str(table)`` prints its shapes ``(None, H, W, C)`` as Keras'
``model.summary()`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from ..probe import Layout, Probe, first_tensor
from ..view import html_table

__all__ = ["LayerInfo", "LayerTable", "POOL_TYPES", "build_layer_table", "first_tensor", "stage_layers",
           "transformer_stages"]

POOL_TYPES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.LPPool2d, nn.FractionalMaxPool2d,
)


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None  # without the batch dimension
    params: int  # parameters of the module and its children
    own_params: int  # parameters held directly by this module
    depth: int
    is_leaf: bool
    is_conv: bool
    is_pool: bool
    trainable: int = 0  # parameters of the module and its children that require grad
    #: how the output reads as a grid: "nchw", "nhwc", "tokens", or "" (no grid: see ``refusal``)
    layout: str = "nchw"
    raw_shape: tuple[int, ...] | None = None  # the output as the module emits it (batch left out)
    refusal: str = ""  # why the output is not a grid, when it is not

    @property
    def frozen(self) -> int:
        """Parameters of the module and its children that do not require grad."""
        return self.params - self.trainable

    @property
    def is_spatial(self) -> bool:
        """Whether the output reads as a feature map (C, H, W): NCHW, NHWC or patch tokens."""
        return bool(self.layout) and self.output_shape is not None and len(self.output_shape) == 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type,
            "output_shape": list(self.output_shape) if self.output_shape is not None else None,
            "params": self.params, "trainable": self.trainable, "depth": self.depth, "leaf": self.is_leaf,
            "layout": self.layout if self.is_spatial else None,
            "grid": list(self.output_shape[1:]) if self.is_spatial else None,
        }


#: torch leaf classes -> the Keras layer that does the same (activations fold into the layer before)
KERAS_TYPES = {"Conv2d": "Conv2D", "Conv2dSame": "Conv2D", "MaxPool2d": "MaxPooling2D", "AvgPool2d": "AveragePooling2D",
               "AdaptiveAvgPool2d": "GlobalAveragePooling2D", "AdaptiveMaxPool2d": "GlobalMaxPooling2D",
               "Flatten": "Flatten", "Linear": "Dense", "BatchNorm2d": "BatchNormalization",
               "BatchNorm1d": "BatchNormalization", "BatchNormAct2d": "BatchNormalization", "Dropout": "Dropout"}
#: Keras' default layer names, numbered _1, _2... after the first
KERAS_NAMES = {"Conv2D": "conv2d", "MaxPooling2D": "max_pooling2d", "AveragePooling2D": "average_pooling2d",
               "GlobalAveragePooling2D": "global_average_pooling2d", "GlobalMaxPooling2D": "global_max_pooling2d",
               "Flatten": "flatten", "Dense": "dense", "BatchNormalization": "batch_normalization",
               "Dropout": "dropout"}


@dataclass
class LayerTable:
    """The modules of a model in execution order, with output shapes and parameters.

    ``rows`` are the modules that do something; ``hidden`` the ``nn.Identity`` placeholders
    and never-called parameter-free modules left out (``table[name]`` finds both).
    """

    rows: list[LayerInfo]
    total_params: int
    trainable_params: int
    input_shape: tuple[int, ...]
    inplace_mutated: frozenset[str] = field(default_factory=frozenset)
    #: (name, output shape) of every module call whose output is a tensor, in the order the
    #: forwards finish (a shared module appears once per call)
    completion: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    #: modules that do nothing at this input (Identity, never-called parameter-free modules)
    hidden: list[LayerInfo] = field(default_factory=list)
    #: the model's own layout of feature maps: "channels_first", or "channels_last" for Keras models
    #: (shapes are stored (C, H, W) either way; only the printed summary follows the model)
    layout: str = "channels_first"
    #: each called module's :class:`~convlens.probe.Layout`, or why its output is not a grid
    layouts: dict[str, Any] = field(default_factory=dict)

    def grid(self, name: str) -> Layout | None:
        """The layout that reads layer ``name``'s output as a grid, or None when none does."""
        lay = self.layouts.get(name)
        return lay if isinstance(lay, Layout) else None

    def refusal(self, name: str) -> str:
        """Why layer ``name``'s output is not a grid ("" when it is one)."""
        lay = self.layouts.get(name)
        return lay if isinstance(lay, str) else ""

    def __iter__(self) -> Iterator[LayerInfo]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> LayerInfo:
        for r in self.rows:
            if r.name == name:
                return r
        for r in self.hidden:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def frozen(self) -> list[str]:
        """The outermost modules whose parameters are all frozen (``[]`` when none is)."""
        out: list[str] = []
        for r in self.rows:
            if r.params and not r.trainable and not any(r.name.startswith(f + ".") for f in out):
                out.append(r.name)
        return out

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rows]

    def native_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A ``(C, H, W)`` shape in the model's own layout (``(H, W, C)`` for channels-last models)."""
        if self.layout == "channels_last" and len(shape) == 3:
            return (shape[1], shape[2], shape[0])
        return tuple(shape)

    def printed_shape(self, r: LayerInfo) -> str:
        """A row's output shape as the model emits it, batch as ``None`` (``(None, 197, 384)`` for
        ViT tokens; Keras models in their own channels-last order)."""
        if r.output_shape is None:
            return "not called"
        raw = r.raw_shape if r.raw_shape is not None and self.layout != "channels_last" else None
        return "(" + ", ".join(["None", *map(str, raw or self.native_shape(r.output_shape))]) + ")"

    def keras_rows(self) -> list[dict[str, Any]]:
        """The table as Keras' ``model.summary()`` lists a Sequential model: one row per layer that
        computes something (convolutions, pooling, flatten, dense, batch norm, dropout; activations
        are part of the layer before them, as Keras' ``activation=`` is), Keras' class and
        numbered names (``conv2d``, ``conv2d_1``, ``max_pooling2d``...), shapes ``(H, W, C)``.
        ``layer`` is the module's own name, for ``--layer``."""
        seen: dict[str, int] = {}
        out = []
        for r in self.rows:
            kind = KERAS_TYPES.get(r.type)
            if not r.is_leaf or kind is None:
                continue
            base = KERAS_NAMES[kind]
            k = seen.get(base, 0)
            seen[base] = k + 1
            shape = r.output_shape
            hwc = (*shape[1:], shape[0]) if shape is not None and len(shape) == 3 else shape
            out.append({"name": base if k == 0 else f"{base}_{k}", "type": kind,
                        "output_shape": list(hwc) if hwc is not None else None, "params": r.params, "layer": r.name})
        return out

    def __str__(self) -> str:  # Keras-like plain text summary
        shape = self.printed_shape

        def note(r: LayerInfo) -> str:
            if not r.params or r.trainable == r.params:
                return ""
            return "  frozen" if not r.trainable else f"  {r.frozen:,} frozen"

        w = max([len(r.name) + 2 * r.depth for r in self.rows] + [10])
        sw = max([len(shape(r)) for r in self.rows] + [20])
        rule = "-" * (w + sw + 40)
        lines = [f"Input: {shape(LayerInfo('', '', self.input_shape, 0, 0, 0, True, False, False))}",
                 f"{'Layer':<{w}}  {'Type':<24} {'Output shape':<{sw}} {'Params':>12}", rule]
        for r in self.rows:
            lines.append(f"{'  ' * r.depth + r.name:<{w}}  {r.type[:24]:<24} {shape(r):<{sw}} {r.params:>12,}{note(r)}")
        lines.append(rule)
        lines.append(f"Total params: {self.total_params:,}")
        lines.append(f"Trainable params: {self.trainable_params:,}")
        lines.append(f"Non-trainable params: {self.non_trainable_params:,}")
        frozen = self.frozen
        if frozen:
            shown = ", ".join(frozen[:8]) + (f" and {len(frozen) - 8} more" if len(frozen) > 8 else "")
            lines.append(f"Frozen: {shown}")
        if self.hidden:
            kinds = sorted({r.type for r in self.hidden})
            lines.append(f"({len(self.hidden)} modules that do nothing here are not listed: {', '.join(kinds)})")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # a notebook shows the summary as a table
        shape = self.printed_shape

        rows = [[r.name, r.type, shape(r), r.params,
                 "" if not r.params or r.trainable == r.params else ("all" if not r.trainable else f"{r.frozen:,}")]
                for r in self.rows]
        footer = [f"Total params: {self.total_params:,}", f"Trainable params: {self.trainable_params:,}",
                  f"Non-trainable params: {self.non_trainable_params:,}"]
        if self.frozen:
            footer.append("Frozen: " + ", ".join(self.frozen[:8]) + (f" and {len(self.frozen) - 8} more"
                                                                     if len(self.frozen) > 8 else ""))
        if self.hidden:
            footer.append(f"({len(self.hidden)} modules that do nothing here are not listed: "
                          f"{', '.join(sorted({r.type for r in self.hidden}))})")
        caption = "Input: (" + ", ".join(["None", *map(str, self.native_shape(self.input_shape))]) + ")"
        return html_table(["Layer", "Type", "Output shape", "Params", "Frozen"], rows, caption=caption,
                          footer=footer, indent=[r.depth for r in self.rows])


def _count(module: nn.Module, recurse: bool) -> int:
    return sum(p.numel() for p in module.parameters(recurse=recurse))


def build_layer_table(module: nn.Module, example: torch.Tensor) -> LayerTable:
    """Run ``module`` once on ``example`` (batch of 1, eval mode) and tabulate every submodule."""
    named = [(n, m) for n, m in module.named_modules() if n]
    was = module.training
    try:
        module.eval()
        with Probe(module, None, keep="first", order=True) as probe, torch.inference_mode(False), torch.no_grad():
            module(example)
    finally:
        module.train(was)
    shapes = {n: tuple(t.shape[1:]) for n, t in probe.activations.items()}
    layouts = dict(probe.layouts)
    mutated = frozenset(probe.mutated())
    order = probe.entered
    completion = [(n, s) for n, s in probe.order if s is not None]

    index = {n: i for i, n in enumerate(order)}
    rows, hidden = [], []
    for n, m in sorted(named, key=lambda nm: index.get(nm[0], len(index))):
        is_conv = isinstance(m, nn.modules.conv._ConvNd)
        row = LayerInfo(
            name=n, type=type(m).__name__, output_shape=shapes.get(n), params=_count(m, True),
            own_params=_count(m, False), depth=n.count("."), is_leaf=not any(True for _ in m.children()),
            is_conv=is_conv, is_pool=isinstance(m, POOL_TYPES) or "pool" in type(m).__name__.lower(),
            trainable=sum(p.numel() for p in m.parameters() if p.requires_grad),
            **_layout_fields(layouts.get(n), shapes.get(n)),
        )
        does_nothing = isinstance(m, nn.Identity) or (n not in index and row.params == 0)
        (hidden if does_nothing else rows).append(row)
    total = _count(module, True)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    layout = str(getattr(module, "native_layout", "channels_first"))
    return LayerTable(rows, total, trainable, tuple(example.shape[1:]), mutated, completion, hidden, layout, layouts)


def _layout_fields(lay: Any, shape: tuple[int, ...] | None) -> dict[str, Any]:
    """A row's ``layout``, ``raw_shape`` and ``refusal`` from the probe's reading of its output."""
    if isinstance(lay, Layout):
        raw = shape
        if lay.kind == "nhwc":
            raw = (shape[1], shape[2], shape[0])
        elif lay.kind == "tokens":
            raw = (lay.prefix + shape[1] * shape[2], shape[0])
        return {"layout": lay.kind, "raw_shape": raw}
    if isinstance(lay, str):
        return {"layout": "", "raw_shape": shape, "refusal": lay}
    return {"layout": "nchw" if shape is not None and len(shape) == 3 else "", "raw_shape": shape}


def plain_stages(table: LayerTable, leaves: list[LayerInfo]) -> list[str]:
    """Every conv and pooling stage of a plain CNN, or ``[]`` when the net is not plain
    (a conv or pool sits in a container holding more than one of them that is not a torch
    ``Sequential`` nor a Keras ``Sequential``/``Functional`` model: a nested transfer base)."""
    types = {r.name: r.type for r in table.rows}
    names = [r.name for r in leaves]

    def under(prefix: str) -> int:
        return sum(1 for n in names if n.startswith(prefix + "."))

    out: list[str] = []
    for r in leaves:
        parts = r.name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        if any(types.get(a) not in ("Sequential", "Functional") and under(a) > 1 for a in ancestors):
            return []
        block = next((a for a in ancestors if under(a) == 1 and table[a].is_spatial), None)
        pick = block or r.name
        if pick not in out:
            out.append(pick)
    return out


def stage_layers(table: LayerTable) -> list[str]:
    """Default layers for a journey: each conv and pooling stage (:func:`cnn_stages`); for a
    transformer, whose convolutions are only a patch embedding, its blocks or stages
    (:func:`transformer_stages`)."""
    picked = cnn_stages(table)
    if len(picked) < 3:
        picked = transformer_stages(table) or picked
    return picked


def cnn_stages(table: LayerTable) -> list[str]:
    """Each conv and pooling stage of a CNN.

    Small plain CNNs (at most 32 conv/pool leaves, nested only in ``nn.Sequential``s or in
    blocks holding one conv or pool each): every conv and pooling layer, descending into
    blocks; a block of one conv (``conv -> bn -> act``) is shown by its output, so a spec
    CNN's ``features.conv1`` is the convolution after its activation, like a Keras Conv2D.
    Deeper ones (residual or multi-conv blocks): the top-level stages that produce feature maps, descending into
    the container of blocks (``blocks``, ``features``, ``layers``...), e.g.
    ``conv_stem, blocks.0 ... blocks.6, conv_head`` for EfficientNet and
    ``conv1, maxpool, layer1 ... layer4`` for a ResNet.
    """
    spatial = [r for r in table.rows if r.is_spatial and r.output_shape[1] * r.output_shape[2] > 1]
    leaves = [r for r in spatial if r.is_leaf and (r.is_conv or r.is_pool)]
    if 0 < len(leaves) <= 32:
        plain = plain_stages(table, leaves)
        if plain:
            return plain

    by_name = {r.name: r for r in table.rows}
    has_conv: dict[str, bool] = {}
    for r in table.rows:
        if r.is_conv or r.is_pool:
            parts = r.name.split(".")
            for i in range(1, len(parts) + 1):
                has_conv[".".join(parts[:i])] = True

    def children(prefix: str) -> list[str]:
        depth = prefix.count(".") + 1 if prefix else 0
        return [r.name for r in table.rows
                if r.depth == depth and (r.name.startswith(prefix + ".") if prefix else True)]

    def pick(prefix: str) -> list[str]:
        out: list[str] = []
        for name in children(prefix):
            r = by_name[name]
            if not has_conv.get(name):
                continue
            kids = [k for k in children(name) if by_name[k].is_spatial and has_conv.get(k)]
            if (not r.is_leaf and len(kids) > 1 and not r.is_spatial) or (len(kids) > 2 and name.split(".")[-1] in {
                    "features", "blocks", "layers", "stages", "body", "trunk"}):
                out.extend(pick(name))
            elif r.is_spatial and r.output_shape[1] * r.output_shape[2] > 1:
                out.append(name)
        return out

    picked = pick("")
    return picked or [r.name for r in leaves[:32]] or [r.name for r in spatial[:32]]


def transformer_stages(table: LayerTable) -> list[str]:
    """The blocks (or stages) of a transformer, in order: the children of one container that share a
    type and read as token or channels-last grids, the outermost such container (most members on a
    tie): ``blocks.0 ... blocks.11`` for a timm ViT, ``layers.0 ... layers.3`` for a timm Swin.
    ``[]`` when the model has none."""
    best: tuple[int, int, list[str]] | None = None
    parents = {r.name.rpartition(".")[0] for r in table.rows}
    for parent in parents:
        kids = [r for r in table.rows if r.name.rpartition(".")[0] == parent and r.is_spatial
                and r.layout in ("tokens", "nhwc") and r.output_shape[1] * r.output_shape[2] > 1]
        by_type: dict[str, list[str]] = {}
        for r in kids:
            by_type.setdefault(r.type, []).append(r.name)
        group = max(by_type.values(), key=len, default=[])
        if len(group) < 2:
            continue
        key = (parent.count(".") + 1 if parent else 0, -len(group))
        if best is None or key < best[:2]:
            best = (*key, group)
    return best[2][:32] if best else []
