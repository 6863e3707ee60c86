"""Colour maps as lookup tables and the fonts we draw with (fast, no figures)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import ImageFont

COLORMAPS = ("viridis", "inferno", "magma", "turbo", "jet", "gray", "RdBu_r", "coolwarm", "seismic")


@lru_cache(maxsize=16)
def lut(name: str = "viridis") -> np.ndarray:
    """A (256, 3) uint8 lookup table for a matplotlib colormap name."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        from ..errors import SpecError, closest

        raise SpecError(f"unknown colormap {name!r}{closest(name, COLORMAPS)}") from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def colorize(values: torch.Tensor | np.ndarray, vmin: float, vmax: float, cmap: str = "viridis") -> np.ndarray:
    """Map values to RGB uint8 (..., 3) through ``cmap`` with a fixed scale."""
    t = torch.as_tensor(values).float()
    span = vmax - vmin if vmax > vmin else 1.0
    idx = ((t - vmin) / span * 255.0).clamp(0, 255).round().to(torch.long).cpu().numpy()
    return lut(cmap)[idx]


def robust_range(values: torch.Tensor, lo: float = 0.005, hi: float = 0.995) -> tuple[float, float]:
    """Percentile range of a tensor (subsampled for speed), for one colour scale per figure."""
    flat = values.detach().float().flatten()
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
    from matplotlib import font_manager

    path = font_manager.findfont("DejaVu Sans:bold" if bold else "DejaVu Sans")
    try:
        return ImageFont.truetype(path, size)
    except OSError:  # pragma: no cover - matplotlib without its fonts
        return ImageFont.load_default(size)
