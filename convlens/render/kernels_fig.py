"""The kernels-lab picture: input | kernel matrix | every output stage, side by side.

Drawn with :class:`matplotlib.figure.Figure` on an Agg canvas, so no global backend is
touched.  Each panel is titled with its shape; the kernel is a small table of its
numbers on a diverging colour map centred on 0; outputs with negative values use a
symmetric diverging scale (0 is white), non-negative ones are grey.

Arrays in, a picture out: this module knows no result class (the kernels lab's
``KernelResult.figure()`` passes its arrays and titles here).

>>> x = np.zeros((1, 9, 9)); x[:, :, 3:6] = 1
>>> k = np.array([[1.0, 0, -1]] * 3)
>>> y = np.zeros((1, 7, 7))
>>> render_kernels(x, k, "vertical-edge", [("conv 1", y)], title="demo").mode
'RGB'
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from .colors import DIVERGING
from .figures import agg_figure, figure_image

#: Arrays at most this many pixels on a side get their values written in the cells.
ANNOTATE_MAX = 12
#: Panels per row before the figure wraps.
MAX_COLS = 5
PANEL_INCHES = 2.9
#: Arrays at most this many pixels on a side get a cell grid and no smoothing.
GRID_MAX = 24
#: Larger arrays scale colours to this percentile of |value| so a few outliers
#: do not wash the picture out.
ROBUST_PERCENTILE = 99.5


def common_denominator(matrix: np.ndarray, limit: int = 256) -> int:
    """The smallest ``d <= limit`` making ``matrix * d`` all integers (1 if none).

    >>> common_denominator(np.full((3, 3), 1 / 9)), common_denominator(np.eye(2) * 0.3)
    (9, 10)
    """
    for d in range(1, limit + 1):
        scaled = matrix * d
        if np.allclose(scaled, np.round(scaled), atol=1e-9):
            return d
    return 1


def _number(v: float) -> str:
    """A cell label of at most about five characters: 3, -0.25, 0.19, 31.3, 1.1e4.

    >>> [_number(v) for v in (3.0, -0.25, 0.1875, 31.25, 1850.2, -10752.0, 0.0004)]
    ['3', '-0.25', '0.19', '31.2', '1850', '-1.1e4', '4e-4']
    """
    a = abs(v)
    if a >= 1e4 or (0 < a < 0.01):
        mantissa, exponent = f"{v:.1e}".split("e")
        return f"{mantissa.replace('.0', '')}e{int(exponent)}"
    if a >= 1000 or abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return f"{v:.2g}" if a < 1 else f"{v:.3g}"


def _cell_fontsize(n: int, labels: list[str], extra: float = 0.0) -> float:
    """Font size for value labels in an ``n``-cell-wide grid, shrunk for long labels."""
    longest = max((len(t) for t in labels), default=1)
    return max(4.0, (_fontsize(n) + extra) * min(1.0, 3.5 / max(longest, 1)))


def _text_colour(value: float, vmax: float) -> str:
    return "white" if vmax > 0 and abs(value) / vmax > 0.6 else "black"


def _cell_grid(ax: Axes, h: int, w: int, colour: str = "0.75", width: float = 0.6) -> None:
    """Thin lines between the cells of an ``h`` x ``w`` image (two line collections)."""
    ax.hlines(np.arange(0.5, h - 1, 1), -0.5, w - 0.5, colors=colour, linewidths=width)
    ax.vlines(np.arange(0.5, w - 1, 1), -0.5, h - 0.5, colors=colour, linewidths=width)


def _plain(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _annotate(ax: Axes, values: np.ndarray, vmax: float, extra: float = 0.0) -> None:
    labels = [_number(float(v)) for v in values.ravel()]
    fs = _cell_fontsize(max(values.shape), labels, extra)
    for ((i, j), v), text in zip(np.ndenumerate(values), labels):
        ax.text(j, i, text, ha="center", va="center", fontsize=fs,
                color=_text_colour(float(v), vmax), in_layout=False)


def _fontsize(n: int) -> float:
    return max(4.5, min(10.0, 60.0 / max(n, 1)))


def draw_kernel(ax: Axes, kernel: np.ndarray, name: str) -> None:
    """The kernel as a table: its numbers in cells coloured on a map centred on 0."""
    kh, kw = kernel.shape
    d = common_denominator(kernel)
    shown = np.round(kernel * d) if d > 1 else kernel
    vmax = float(np.abs(shown).max()) or 1.0
    ax.imshow(shown, cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
    _plain(ax)
    if max(kh, kw) <= 2 * ANNOTATE_MAX:
        _cell_grid(ax, kh, kw)
        _annotate(ax, shown, vmax, extra=2.0)
    scale = f"  × {Fraction(1, d)}" if d > 1 else ""
    ax.set_title(f"kernel: {name}\n{kh}x{kw}{scale}", fontsize=10)


def _to_hwc(t: np.ndarray) -> np.ndarray:
    return t[0] if t.shape[0] == 1 else np.moveaxis(t, 0, -1)


def draw_array(ax: Axes, values: np.ndarray, title: str, *, fixed_unit: bool = False) -> None:
    """One image panel for a ``(C, h, w)`` array.

    One channel: grey from 0 (or the minimum) to the maximum, or a symmetric diverging
    scale when there are negative values, with a colour bar.  Three channels: shown as
    colour, clipped to [0, 1], or mapped 0 -> mid-grey when there are negatives.
    ``fixed_unit`` pins a grey panel to [0, 1] (used for the input image).
    """
    arr = _to_hwc(np.asarray(values, dtype=np.float64))
    h, w = arr.shape[:2]
    small = max(h, w) <= GRID_MAX
    interp = "nearest" if max(h, w) <= 64 else "antialiased"
    lo, hi = float(arr.min()), float(arr.max())
    negative = lo < -1e-9
    vmax = _scale_top(np.abs(arr), small) or 1.0
    if arr.ndim == 3:
        if negative:
            shown = np.clip(0.5 + arr / (2 * vmax), 0.0, 1.0)
            ax.set_xlabel("per channel, 0 = grey", fontsize=8)
        else:
            shown = np.clip(arr, 0.0, 1.0)
        ax.imshow(shown, interpolation=interp)
    else:
        if negative:
            im = ax.imshow(arr, cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation=interp)
        else:
            top = 1.0 if fixed_unit else max(_scale_top(arr, small), 1e-9)
            im = ax.imshow(arr, cmap="gray", vmin=0.0, vmax=top, interpolation=interp)
        if not fixed_unit:
            cbar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            cbar.ax.tick_params(labelsize=7)
        if max(h, w) <= ANNOTATE_MAX:
            _annotate_image(ax, arr, negative, vmax, hi, fixed_unit)
    _plain(ax)
    if small:
        _cell_grid(ax, h, w, colour="0.55", width=0.3)
    ax.set_title(title, fontsize=10)


def _scale_top(values: np.ndarray, exact: bool) -> float:
    """The top of the colour scale: the maximum, or a high percentile for big arrays."""
    if exact or values.size <= GRID_MAX * GRID_MAX:
        return float(values.max())
    return float(np.percentile(values, ROBUST_PERCENTILE)) or float(values.max())


def _annotate_image(ax: Axes, arr: np.ndarray, negative: bool, vmax: float, hi: float,
                    fixed_unit: bool) -> None:
    labels = [_number(float(v)) for v in arr.ravel()]
    fs = _cell_fontsize(max(arr.shape), labels)
    top = 1.0 if fixed_unit else max(hi, 1e-9)
    for ((i, j), v), text in zip(np.ndenumerate(arr), labels):
        if negative:
            colour = _text_colour(v, vmax)
        else:
            colour = "black" if v / top > 0.5 else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=fs, color=colour,
                in_layout=False)


def _input_title(x: np.ndarray, pixels: bool) -> str:
    h, w = x.shape[-2:]
    channels = "gray" if x.shape[0] == 1 else "rgb"
    return f"input\n{h}x{w} ({channels})" if pixels else f"input: your numbers\n{h}x{w} ({channels})"


def kernel_figure(input: np.ndarray, kernel: np.ndarray, kernel_name: str,
                  stages: Sequence[tuple[str, np.ndarray]], *, title: str = "",
                  input_pixels: bool = True) -> Figure:
    """The matplotlib :class:`Figure` (Agg canvas attached): the ``(C, H, W)`` input, the
    kernel matrix, then every ``(label, (C, h, w) array)`` stage, shapes in the titles.

    ``input_pixels``: the input is an image in [0, 1] (drawn on that fixed scale); else it
    is an array of numbers, drawn on its own scale with its values written in small cells."""
    panels = 2 + len(stages)
    ncols = min(panels, MAX_COLS)
    nrows = math.ceil(panels / ncols)
    fig = agg_figure((PANEL_INCHES * ncols, PANEL_INCHES * nrows + 0.7), dpi=100, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.08, wspace=0.06)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = np.asarray(input)
    draw_array(axes[0], x, _input_title(x, input_pixels), fixed_unit=input_pixels)
    draw_kernel(axes[1], np.asarray(kernel), kernel_name)
    for ax, (label, values) in zip(axes[2:], stages):
        sh, sw = np.asarray(values).shape[-2:]
        draw_array(ax, np.asarray(values), f"{label}\n{sh}x{sw}")
    for ax in axes[panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def render_kernels(input: np.ndarray, kernel: np.ndarray, kernel_name: str,
                   stages: Sequence[tuple[str, np.ndarray]], *, title: str = "",
                   input_pixels: bool = True) -> Image.Image:
    """:func:`kernel_figure` drawn to an RGB PIL image."""
    return figure_image(kernel_figure(input, kernel, kernel_name, stages, title=title,
                                      input_pixels=input_pixels))


def gallery_figure(input: np.ndarray, rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray]]]],
                   *, title: str = "", input_pixels: bool = True) -> Figure:
    """Several kernels on one input: one row per ``(kernel name, matrix, stages)``, each
    reading input | kernel | its stages, on the same scales as :func:`kernel_figure`."""
    ncols = 2 + max(len(stages) for _, _, stages in rows)
    nrows = len(rows)
    fig = agg_figure((PANEL_INCHES * ncols, PANEL_INCHES * nrows + 0.7), dpi=100, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.08, wspace=0.06)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    x = np.asarray(input)
    for r, (name, kernel, stages) in enumerate(rows):
        draw_array(axes[r, 0], x, _input_title(x, input_pixels), fixed_unit=input_pixels)
        draw_kernel(axes[r, 1], np.asarray(kernel), name)
        for ax, (label, values) in zip(axes[r, 2:], stages):
            sh, sw = np.asarray(values).shape[-2:]
            draw_array(ax, np.asarray(values), f"{name}: {label}\n{sh}x{sw}")
        for ax in axes[r, 2 + len(stages):]:
            ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def render_kernel_gallery(input: np.ndarray, rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, np.ndarray]]]],
                          *, title: str = "", input_pixels: bool = True) -> Image.Image:
    """:func:`gallery_figure` drawn to an RGB PIL image."""
    return figure_image(gallery_figure(input, rows, title=title, input_pixels=input_pixels))
