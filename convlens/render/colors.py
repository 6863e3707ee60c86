"""Colour maps: the one registry, lookup tables, ``colorize`` and the fonts we draw with.

Every picture in the package colours values through :func:`colorize` (a lookup table per
matplotlib colour map, no figure), and every ``cmap`` argument is checked by
:func:`check_cmap`, so an unknown name fails the same way everywhere.

>>> import numpy as np
>>> colorize(np.array([[0.0, 1.0]]), cmap="gray").tolist()
[[[0, 0, 0], [255, 255, 255]]]
>>> colorize(np.array([2.0, 4.0]), 0.0, 4.0, "gray")[:, 0].tolist()
[128, 255]
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import ImageFont

from ..errors import SpecError, closest

#: The colour maps named in the docs; any other matplotlib colour map name works too.
COLORMAPS = ("viridis", "inferno", "magma", "plasma", "turbo", "jet", "gray", "RdBu_r", "coolwarm", "seismic")
#: The diverging map centred on 0 (kernels, filters, signed maps).
DIVERGING = "RdBu_r"


def _colormap(name: str) -> Any:
    import matplotlib  # lazy: importing matplotlib costs start-up time

    try:
        return matplotlib.colormaps[name]
    except (KeyError, ValueError, TypeError):
        names = sorted(set(COLORMAPS) | set(matplotlib.colormaps))
        raise SpecError(f"unknown colour map {name!r}{closest(str(name), names)}", param="cmap") from None


def check_cmap(name: str) -> str:
    """``name`` if it is a colour map; otherwise a one-line :class:`SpecError` naming the closest.

    >>> check_cmap("viridis")
    'viridis'
    """
    lut(name)
    return name


@lru_cache(maxsize=32)
def lut(name: str = "viridis") -> np.ndarray:
    """A (256, 3) uint8 lookup table for a matplotlib colour map name (read-only)."""
    table = np.rint(_colormap(name)(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    table.setflags(write=False)
    return table


def colorize(values: torch.Tensor | np.ndarray, vmin: float | None = None, vmax: float | None = None,
             cmap: str = "viridis") -> np.ndarray:
    """Map values to RGB uint8 ``(..., 3)`` through ``cmap``.

    ``vmin``/``vmax``: the colour scale; when both are None, values already in [0, 1] are used
    as they are and anything else is min-max scaled (a heatmap that was not normalised).
    NaN is the bottom of the scale, infinities its ends.
    """
    t = torch.as_tensor(values).detach().float().cpu()
    if vmin is None and vmax is None:
        t = torch.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0)
        lo, hi = (float(t.amin()), float(t.amax())) if t.numel() else (0.0, 1.0)
        vmin, vmax = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)
    else:
        vmin = float(t.amin()) if vmin is None else float(vmin)
        vmax = float(t.amax()) if vmax is None else float(vmax)
        t = torch.nan_to_num(t, nan=vmin, posinf=vmax, neginf=vmin)
    span = vmax - vmin if vmax > vmin else 1.0
    idx = ((t - vmin) / span * 255.0).clamp(0, 255).round().to(torch.long).numpy()
    return lut(cmap)[idx]


def robust_range(values: torch.Tensor, lo: float = 0.005, hi: float = 0.995) -> tuple[float, float]:
    """Percentile range of a tensor (subsampled for speed), for one colour scale per figure."""
    flat = torch.as_tensor(values).detach().float().flatten()
    if flat.numel() > 1_000_000:
        step = flat.numel() // 1_000_000 + 1
        flat = flat[::step]
    if flat.numel() == 0:
        return 0.0, 1.0
    q = torch.quantile(flat, torch.tensor([lo, hi], dtype=flat.dtype))
    a, b = float(q[0]), float(q[1])
    if b <= a:
        a, b = float(flat.min()), float(flat.max())
        if b <= a:
            b = a + 1.0
    return a, b


@lru_cache(maxsize=16)
def font(size: int = 14, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (ships with matplotlib) at ``size`` pixels."""
    from matplotlib import font_manager  # lazy: start-up time

    path = font_manager.findfont("DejaVu Sans:bold" if bold else "DejaVu Sans")
    try:
        return ImageFont.truetype(path, size)
    except OSError:  # pragma: no cover - matplotlib without its fonts
        return ImageFont.load_default(size)
