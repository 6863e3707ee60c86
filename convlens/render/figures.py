"""Matplotlib figures drawn without pyplot: a Figure on its own Agg canvas, then a PIL image.

Library code never calls ``matplotlib.use`` (that can switch a notebook's backend): every figure
is made here with its own canvas.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from PIL import Image

from .files import figure_text


class _NameSafeRenderer(RendererAgg):
    """Agg that measures and draws every string as :func:`~convlens.render.files.figure_text` shows
    it: a class or file name holding undecodable bytes (which FreeType refuses with a TypeError) or
    control characters is drawn escaped (``\\xff``, ``\\x1b``), never crashes the figure."""

    def get_text_width_height_descent(self, s, prop, ismath):  # noqa: D102 - Agg's own
        return super().get_text_width_height_descent(s if ismath else figure_text(s), prop, ismath)

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):  # noqa: D102 - Agg's own
        return super().draw_text(gc, x, y, s if ismath else figure_text(s), prop, angle, ismath, mtext)


class _NameSafeCanvas(FigureCanvasAgg):
    """The Agg canvas with :class:`_NameSafeRenderer` (for layout, ``tight_layout`` included, and drawing)."""

    def get_renderer(self, *args, **kwargs):  # noqa: D102 - Agg's own
        renderer = super().get_renderer(*args, **kwargs)
        if type(renderer) is RendererAgg:
            renderer.__class__ = _NameSafeRenderer
        return renderer


def agg_figure(figsize: tuple[float, float], dpi: int = 100, **kwargs) -> Figure:
    """A matplotlib Figure on its own Agg canvas (``fig.savefig`` works; no pyplot, no backend switch).
    Names in its labels are drawn safely (see :class:`_NameSafeRenderer`)."""
    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    _NameSafeCanvas(fig)
    return fig


def figure_image(fig: Figure) -> Image.Image:
    """Draw a figure on its Agg canvas into an RGB PIL image, then release the figure's artists."""
    canvas = fig.canvas if isinstance(fig.canvas, _NameSafeCanvas) else _NameSafeCanvas(fig)
    canvas.draw()
    image = Image.fromarray(np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    fig.clear()
    return image
