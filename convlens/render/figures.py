"""Matplotlib figures drawn without pyplot: a Figure on its own Agg canvas, then a PIL image.

Library code never calls ``matplotlib.use`` (that can switch a notebook's backend): every figure
is made here with its own canvas. Matplotlib is imported by the first figure, not by importing
this module: commands that draw nothing (``convlens predict``) start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .files import figure_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CANVAS: list[type] = []  # the name-safe Agg canvas class, made by the first figure


def name_safe_canvas() -> type:
    """The Agg canvas whose renderer measures and draws every string as
    :func:`~convlens.render.files.figure_text` shows it: a class or file name holding undecodable
    bytes (which FreeType refuses with a TypeError) or control characters is drawn escaped
    (``\\xff``, ``\\x1b``), never crashes the figure (``tight_layout`` included). Built on first use:
    matplotlib is imported by the first figure, not at start-up (commands that draw nothing)."""
    if _CANVAS:
        return _CANVAS[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

    class NameSafeRenderer(RendererAgg):
        def get_text_width_height_descent(self, s, prop, ismath):  # noqa: D102 - Agg's own
            return super().get_text_width_height_descent(s if ismath else figure_text(s), prop, ismath)

        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):  # noqa: D102 - Agg's own
            return super().draw_text(gc, x, y, s if ismath else figure_text(s), prop, angle, ismath, mtext)

    class NameSafeCanvas(FigureCanvasAgg):
        def get_renderer(self, *args, **kwargs):  # noqa: D102 - Agg's own
            renderer = super().get_renderer(*args, **kwargs)
            if type(renderer) is RendererAgg:
                renderer.__class__ = NameSafeRenderer
            return renderer

    _CANVAS.append(NameSafeCanvas)
    return NameSafeCanvas


def agg_figure(figsize: tuple[float, float], dpi: int = 100, **kwargs) -> "Figure":
    """A matplotlib Figure on its own Agg canvas (``fig.savefig`` works; no pyplot, no backend switch).
    Names in its labels are drawn safely (see :func:`name_safe_canvas`)."""
    from matplotlib.figure import Figure  # here: start-up of commands that draw nothing

    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    name_safe_canvas()(fig)
    return fig


def figure_image(fig: "Figure") -> Image.Image:
    """Draw a figure on its Agg canvas into an RGB PIL image, then release the figure's artists."""
    canvas_class = name_safe_canvas()
    canvas = fig.canvas if isinstance(fig.canvas, canvas_class) else canvas_class(fig)
    canvas.draw()
    image = Image.fromarray(np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    fig.clear()
    return image
