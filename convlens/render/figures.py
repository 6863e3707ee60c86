"""Matplotlib figures drawn without pyplot: a Figure on its own Agg canvas, then a PIL image.

Library code never calls ``matplotlib.use`` (that can switch a notebook's backend): every figure
is made here with its own canvas. Matplotlib is imported by the first figure, not by importing
this module: commands that draw nothing (``convlens predict``) start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def agg_figure(figsize: tuple[float, float], dpi: int = 100, **kwargs) -> "Figure":
    """A matplotlib Figure on its own Agg canvas (``fig.savefig`` works; no pyplot, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: start-up of commands that draw nothing
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def figure_image(fig: "Figure") -> Image.Image:
    """Draw a figure on its Agg canvas into an RGB PIL image, then release the figure's artists."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.fromarray(np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    fig.clear()
    return image
