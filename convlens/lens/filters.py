"""What a conv layer's weights look like: filter grids beside the hand-made kernels.

Drawn with the grid compositor of :mod:`convlens.render.grid` (no matplotlib figure).
First layers (whose input is the image) are drawn as RGB composites (grey for
1-channel models): 0 is mid-grey, the colour shows which input channel a weight
favours.  Deeper layers are drawn as per-input-channel slices: one row per
filter, one column per input channel, on a diverging colour map centred on 0.
Every grid uses ONE colour scale (the layer's largest ``|w|``), so filters can be
compared with each other.

For first layers each filter is also matched to its nearest classic kernel from
the kernels lab (:data:`convlens.lens.kernels.KERNELS`): the filter summed over its
input channels (what it does to a grey image), cosine similarity with each
kernel resized to the filter's size.  A negative score means the filter is the
kernel's mirror image (e.g. a dark-to-light instead of a light-to-dark edge).

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from convlens.models import wrap_module
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    >>> with torch.no_grad():
    ...     net[0].weight[0, 0] = torch.tensor([[-1., 0, 1], [-2, 0, 2], [-1, 0, 1]])
    >>> grid = filters(wrap_module(net, input_size=(1, 16, 16)), "0")
    >>> grid.matches[0].kernel, round(grid.matches[0].score, 2)
    ('sobel-x', 1.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import LayerError, SpecError
from ..render.colors import DIVERGING
from ..render.files import OutDir, Saved, safe_stem
from ..render.grid import colorbar, fit_image, map_tiles, titled, to_pil_image
from ..render.grid import grid as compose
from ..view import View
from .kernels import KERNELS, kernel_names


@dataclass(frozen=True)
class KernelMatch:
    """A filter's nearest classic kernel: name and signed cosine similarity."""

    filter: int
    kernel: str
    score: float

    @property
    def label(self) -> str:
        """``"Sobel x, 0.82"``: the kernel's display name and the score."""
        return f"{pretty_kernel_name(self.kernel)}, {self.score:.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {"filter": self.filter, "kernel": self.kernel, "score": self.score}


def pretty_kernel_name(name: str) -> str:
    """``"sobel-x"`` -> ``"Sobel x"``; ``"vertical-edge"`` -> ``"Vertical edge"``."""
    words = name.replace("_", "-").split("-")
    return " ".join([words[0].capitalize(), *words[1:]])


@dataclass
class FilterGrid(View):
    """The weights of one conv layer, ready to draw.

    Attributes:
        layer: the layer's module path.
        weights: ``(out, in, kh, kw)`` float tensor on the CPU (all filters).
        shown: the indices of the filters drawn.
        first_layer: drawn as RGB/grey composites (its input is the image).
        scale: the one colour scale (max ``|w|``) of the grid.
        matches: the nearest classic kernel per shown filter (first layers only).
        max_inputs: at most this many input-channel columns are drawn.
    """

    layer: str
    weights: torch.Tensor
    shown: list[int]
    first_layer: bool
    scale: float
    matches: list[KernelMatch] = field(default_factory=list)
    max_inputs: int = 16

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weights.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "weight_shape": list(self.shape), "filters_shown": self.shown,
            "kind": "composite" if self.first_layer else "slices", "scale": self.scale,
            "matches": [m.to_dict() for m in self.matches],
        }

    def figure(self, **_opts: Any) -> Image.Image:
        """The grid as a PIL image."""
        return render_filter_grid(self)

    def save(self, out_dir: str | os.PathLike, name: str | None = None, **_opts: Any) -> Saved:
        """Write ``<name>.png`` (role ``figure``) and ``<name>.json`` (role ``json``) under
        ``out_dir``, atomically; ``name`` defaults to ``filters_<layer>``."""
        out = OutDir(out_dir)
        stem = name or f"filters_{safe_stem(self.layer, 'input')}"
        out.png("figure", f"{stem}.png", self.figure())
        out.json("json", f"{stem}.json", self.to_dict())
        return out.saved()


def conv_layers(model) -> list[str]:
    """Module paths of the model's 2-D conv layers, in definition order."""
    return [n for n, m in model.module.named_modules() if n and isinstance(m, nn.Conv2d)]


def _conv_module(model, layer: str | None) -> tuple[str, nn.Conv2d]:
    names = conv_layers(model)
    if not names:
        raise LayerError(f"{model.name} has no Conv2d layer to show filters of", param="layer")
    if layer is None:
        layer = names[0]
    module = model.get_layer(layer)  # clear error for unknown names
    if not isinstance(module, nn.Conv2d):
        raise LayerError(f"layer {layer!r} is a {type(module).__name__}, not a convolution, so it has no "
                         f"filters to show; conv layers include: {', '.join(names[:6])}"
                         + (", ..." if len(names) > 6 else ""), param="layer")
    return layer, module


def nearest_kernels(weights: torch.Tensor, kernels: dict[str, np.ndarray] | None = None) -> list[KernelMatch]:
    """Each filter's nearest classic kernel by cosine similarity (batched).

    ``weights``: ``(out, in, kh, kw)``.  Each filter is summed over its input
    channels (its response to a grey image); each kernel is resized to
    ``kh x kw`` (bilinear, corners aligned).  The best ``|cosine|`` wins and
    its signed value is kept.  Kernels: the kernels lab's canonical names.

    Examples:
        >>> w = torch.zeros(1, 3, 3, 3); w[0, :, :, 0] = 1; w[0, :, :, 2] = -1
        >>> m = nearest_kernels(w)[0]
        >>> m.kernel, round(m.score, 3)
        ('vertical-edge', 1.0)
    """
    if kernels is None:
        kernels = {n: KERNELS[n] for n in kernel_names()}
    kh, kw = weights.shape[-2:]
    names = list(kernels)
    bank = torch.stack([torch.tensor(np.array(kernels[n], dtype=np.float32)) for n in names])
    if bank.shape[-2:] != (kh, kw):
        bank = F.interpolate(bank[:, None], size=(kh, kw), mode="bilinear", align_corners=True)[:, 0]
    gray = weights.detach().float().cpu().sum(dim=1).flatten(1)  # (out, kh*kw)
    sims = F.normalize(gray, dim=1) @ F.normalize(bank.flatten(1), dim=1).T  # (out, kernels)
    best = sims.abs().argmax(dim=1)
    score = sims.gather(1, best[:, None])[:, 0]
    return [KernelMatch(i, names[int(b)], float(s)) for i, (b, s) in enumerate(zip(best.tolist(), score.tolist()))]


def filters(model, layer: str | None = None, *, max_filters: int = 64, max_inputs: int = 16) -> FilterGrid:
    """The weights of a conv layer as a grid of filters, first layers matched to classic kernels.

    A first layer (its input is the image: the first conv layer, not grouped, with the model's 1 or
    3 input channels) is drawn as colour composites and each filter is matched to its nearest
    kernel of the kernels lab, which shows that learned filters are edge and colour detectors;
    deeper layers are drawn as per-input-channel slices. The grid has one colour scale so filters
    compare with each other.

    Args:
        model (LensModel): a :class:`~convlens.models.LensModel` (from :func:`~convlens.models.load_model`).
        layer: the module path of a ``Conv2d`` layer (default: the first one).
        max_filters: at most this many filters are drawn (and matched); the result's ``weights``
            keep them all.
        max_inputs: at most this many input-channel columns for a deeper layer.

    Returns:
        FilterGrid: a view of the layer's weights, the filters shown and, for a first layer,
            their nearest kernels.

    Raises:
        SpecError: ``max_filters`` below 1.
        LayerError: an unknown layer, a layer that is not a ``Conv2d``, or a model without one.

    Examples:
        >>> from convlens import load_model                    # doctest: +SKIP
        >>> filters(load_model(), "conv_stem").matches[0].label  # doctest: +SKIP
        'Sobel y, 0.71'
    """
    if max_filters < 1:
        raise SpecError(f"max_filters must be at least 1 (got {max_filters})", param="max_filters")
    layer, conv = _conv_module(model, layer)
    w = conv.weight.detach().float().cpu()
    first = (layer == conv_layers(model)[0] and conv.groups == 1
             and w.shape[1] == model.config.channels and w.shape[1] in (1, 3))
    shown = list(range(min(max_filters, w.shape[0])))
    scale = float(w[shown].abs().max()) or 1.0
    matches = nearest_kernels(w[shown]) if first else []
    return FilterGrid(layer, w, shown, first, scale, matches, max_inputs=max(1, max_inputs))


# --------------------------------------------------------------------------- drawing


def _tiles(values: torch.Tensor, scale: float, cmap: str, size: int) -> list[Image.Image]:
    """``(K, kh, kw)`` weights as tiles on one symmetric scale, enlarged with nearest neighbours."""
    return map_tiles(values, -scale, scale, cmap=cmap, tile=size)


def render_filter_grid(grid: FilterGrid) -> Image.Image:
    """Draw a :class:`FilterGrid` with the grid compositor, on one colour scale (``±scale``).

    First layers (and one-input filters): one tile per filter, 8 a row, titled with its index
    and nearest classic kernel; RGB composites (0 is mid-grey) for 3 input channels.  Deeper
    layers: one row per filter, one column per input channel, diverging map with a colour bar.
    """
    w = grid.weights[grid.shown]
    n, cin, kh, kw = w.shape
    s = grid.scale
    size = max(64, min(96, 24 * max(kh, kw)))
    if grid.first_layer or cin == 1:
        if cin == 3:  # RGB composite: 0 is mid-grey, one scale for the grid
            tiles = [fit_image(to_pil_image((f / (2 * s) + 0.5).clamp(0, 1)), size, size) for f in w]
        else:
            tiles = _tiles(w[:, 0], s, "gray" if grid.first_layer else DIVERGING, size)
        labels = []
        for i in range(n):
            m = grid.matches[i] if i < len(grid.matches) else None
            labels.append(f"#{grid.shown[i]}" + (f"\n{m.label}" if m else ""))
        cols = min(8, n)
        body = compose([tiles[i:i + cols] for i in range(0, n, cols)],
                       col_titles=[labels[i:i + cols] for i in range(0, n, cols)],
                       cell=(max(size, 118 if grid.matches else size), size), font_size=11)
        if grid.first_layer:
            kind = "RGB composite, mid-grey = 0" if cin == 3 else "grey = 0"
            return titled(body, f"{grid.layer}: {n} of {grid.shape[0]} filters {kh}x{kw}",
                          f"{kind}, scale ±{s:.3g}" + ("; label: nearest classic kernel, cosine similarity"
                                                      if grid.matches else ""))
        return titled(body, f"{grid.layer}: {n} of {grid.shape[0]} filters {kh}x{kw}, one input channel each",
                      footer=colorbar(min(body.width, 360), -s, s, DIVERGING))
    cin_shown = min(cin, grid.max_inputs)
    size = max(24, min(48, 8 * max(kh, kw)))
    rows = [_tiles(w[i, :cin_shown], s, DIVERGING, size) for i in range(n)]
    body = compose(rows, row_titles=[f"#{i}" for i in grid.shown],
                   col_titles=[f"in {j}" for j in range(cin_shown)], cell=(max(size, 30), size), pad=3,
                   font_size=10)
    more = f", first {cin_shown} of {cin} inputs" if cin_shown < cin else ""
    return titled(body, f"{grid.layer}: {n} of {grid.shape[0]} filters x {cin} input channels{more}, {kh}x{kw}",
                  footer=colorbar(min(max(body.width, 200), 360), -s, s, DIVERGING))
