"""Numbers on heatmaps: downsampling to the audit grid, the peak, mass in the centre and at the
border, spread, the area that holds half the mass, and the words for a place on the grid.

Positions are fractions of the model's input grid: ``x`` from 0 (left) to 1 (right), ``y``
from 0 (top) to 1 (bottom); a pixel's position is its centre.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: side of the downsampled maps written to the shards
MAP_SIZE = 32
#: the centre box: the middle half of the grid in each direction (a quarter of its area)
CENTRE = (0.25, 0.75)
#: the border band: the outer eighth of the grid on every side
BORDER = 0.125


def downsample(maps: torch.Tensor, size: int = MAP_SIZE) -> torch.Tensor:
    """``(N, H, W)`` maps to ``(N, size, size)`` by area averaging (float32, on the CPU)."""
    m = maps.detach().float()
    if m.ndim == 2:
        m = m[None]
    return F.adaptive_avg_pool2d(m[:, None], (size, size))[:, 0].cpu()


def peaks(maps: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` maps -> ``(N, 2)`` peak positions ``(x, y)`` as fractions of the grid (NaN for an
    empty map)."""
    n, h, w = maps.shape
    m = maps.detach().float().reshape(n, -1)
    flat = m.argmax(dim=1).cpu()
    y, x = flat // w, flat % w
    out = torch.stack([(x.float() + 0.5) / w, (y.float() + 0.5) / h], dim=1)
    out[~(m.amax(dim=1) > 0).cpu()] = float("nan")  # an empty map has no peak
    return out


def _mass(maps: np.ndarray) -> np.ndarray:
    m = np.clip(np.nan_to_num(maps.astype(np.float64)), 0.0, None)
    s = m.sum(axis=(-2, -1), keepdims=True)
    return np.where(s > 0, m / np.where(s > 0, s, 1.0), 1.0 / (m.shape[-1] * m.shape[-2]))


def _grid(size: int) -> np.ndarray:
    return (np.arange(size) + 0.5) / size


def numbers(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Per-map numbers of ``(N, s, s)`` maps: ``centre`` and ``border`` (shares of the mass),
    ``spread`` (root-mean-square distance of the mass from its centroid, in grid fractions) and
    ``area50`` (the fraction of the grid that holds half the mass, smallest first)."""
    p = _mass(maps)
    n, h, w = p.shape
    ys, xs = _grid(h), _grid(w)
    cy = (ys >= CENTRE[0]) & (ys < CENTRE[1])
    cx = (xs >= CENTRE[0]) & (xs < CENTRE[1])
    by = (ys < BORDER) | (ys >= 1 - BORDER)
    bx = (xs < BORDER) | (xs >= 1 - BORDER)
    centre = p[:, cy][:, :, cx].sum(axis=(1, 2))
    border = (p * (by[:, None] | bx[None, :])).sum(axis=(1, 2))
    mx, my = (p.sum(axis=1) * xs).sum(axis=1), (p.sum(axis=2) * ys).sum(axis=1)
    d2 = (xs[None, None, :] - mx[:, None, None]) ** 2 + (ys[None, :, None] - my[:, None, None]) ** 2
    spread = np.sqrt((p * d2).sum(axis=(1, 2)))
    return {"centre": centre, "border": border, "spread": spread, "area50": area_fraction(p, 0.5)}


def area_fraction(maps: np.ndarray, share: float = 0.5) -> np.ndarray:
    """The smallest fraction of pixels of each ``(N, h, w)`` map that holds ``share`` of its mass."""
    p = _mass(maps).reshape(maps.shape[0], -1)
    c = np.cumsum(-np.sort(-p, axis=1), axis=1)
    return ((c < share - 1e-9).sum(axis=1) + 1) / p.shape[1]


def hot_area(mean_map: np.ndarray, level: float = 0.5) -> float:
    """The fraction of the grid where ``mean_map`` is at least ``level`` of its maximum."""
    m = np.asarray(mean_map, np.float64)
    top = m.max()
    return float((m >= level * top).mean()) if top > 0 else 1.0


def hot_region(mean_map: np.ndarray, share: float = 0.5) -> np.ndarray:
    """The boolean mask of the fewest pixels of ``mean_map`` that hold ``share`` of its mass."""
    p = _mass(mean_map[None])[0]
    order = np.argsort(-p, axis=None)
    c = np.cumsum(p.ravel()[order])
    k = int((c < share - 1e-9).sum()) + 1
    mask = np.zeros(p.size, bool)
    mask[order[:k]] = True
    return mask.reshape(p.shape)


def mass_in(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside ``mask``."""
    return (_mass(maps) * mask).sum(axis=(-2, -1))


def peak_of(mean_map: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` of the largest pixel of one ``(h, w)`` map, as grid fractions."""
    h, w = mean_map.shape
    y, x = np.unravel_index(int(np.argmax(mean_map)), (h, w))
    return (float((x + 0.5) / w), float((y + 0.5) / h))


def place(x: float, y: float) -> str:
    """Words for a grid position: ``"the top-left corner"``, ``"the centre"``, ``"the bottom edge"``..."""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    if row and col:
        return f"the {row}-{col} corner"
    if row or col:
        return f"the {row or col} edge" if min(x, y, 1 - x, 1 - y) < BORDER else f"the {row or col} side"
    return "the centre"
