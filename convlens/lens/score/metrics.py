"""What ``score`` measures: the metrics, their direction, and the two baselines scored beside the methods.

The protocols themselves are in :mod:`convlens.lens.faithfulness`; this module names them
(:data:`METRICS`, with the aliases :func:`parse_metrics` accepts) and draws the trivial maps
(:func:`random_maps`, :func:`centre_map`) that show what a map with no knowledge of the model gets.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ...names import parse_names
from ..cam.targets import parse_methods

#: every metric, in table order
METRICS = ("deletion", "insertion", "avgdrop", "increase", "road-morf", "road-lerf", "road", "pointing", "energy")
#: the metrics where a higher value is better
HIGHER_BETTER = {"insertion", "increase", "road-lerf", "road", "pointing", "energy"}
#: metrics that need boxes
NEEDS_BOXES = {"pointing", "energy"}
#: the trivial maps scored beside the methods
BASELINES = ("random", "centre")
#: ROAD's removed fractions
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: other spellings of the metrics and baselines -> their names
ALIASES = {"center": "centre", "drop": "avgdrop", "average-drop": "avgdrop", "morf": "road-morf",
            "lerf": "road-lerf", "pointing-game": "pointing", "ebpg": "energy"}


def parse_metrics(metric: str | Sequence[str]) -> list[str]:
    """Metric names from ``"deletion,insertion"`` or a list; unknown names fail with the closest.

    Args:
        metric: names from :data:`METRICS` or :data:`ALIASES` (any case, ``_`` for ``-``),
            comma-separated or a list, or ``"all"``.

    Returns:
        list[str]: the canonical names, in the order given, without repeats.

    Raises:
        SpecError: an unknown metric (with the closest names) or none at all (``param="metric"``).
    """
    return parse_names(metric, METRICS, param="metric", aliases=ALIASES, every="all",
                       normalise=lambda raw: raw.lower().replace("_", "-"))


def split_methods(method: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """Split a method request into explanation methods and baselines; the baselines are always both.

    Args:
        method: methods as :func:`~convlens.lens.cam.explain` takes them, comma-separated or a list;
            ``random`` and ``centre`` (or ``center``) among them are dropped (they are always added).

    Returns:
        tuple[list[str], list[str]]: the explanation methods' canonical names and :data:`BASELINES`.

    Raises:
        SpecError: an unknown method.
    """
    items = method.split(",") if isinstance(method, str) else [str(m) for p in method for m in str(p).split(",")]
    real = [m.strip() for m in items
            if m.strip() and ALIASES.get(m.strip().lower(), m.strip().lower()) not in BASELINES]
    return (parse_methods(real) if real else []), list(BASELINES)


# -- baselines ------------------------------------------------------------------------------

def random_maps(shape: Sequence[int], seed: int = 0, device: Any = "cpu", cell: int = 32) -> torch.Tensor:
    """Smoothed uniform noise maps in [0, 1] of ``shape (..., H, W)``, from ``seed``: one uniform value
    per ``cell`` x ``cell`` block (a CAM's resolution for a stride-32 network), bilinearly upsampled.

    Smoothed on purpose: unsmoothed per-pixel noise deletes scattered single pixels, which wrecks any
    input quickly and makes a random map look better at deletion than any real map.

    Args:
        shape: ``(..., H, W)``, the maps' shape.
        seed: seeds the noise, so a run repeats.
        device: where the maps go.
        cell: the side of a block of one value, in pixels.

    Returns:
        torch.Tensor: float32 maps of ``shape``, values in [0, 1].
    """
    *lead, H, W = (int(v) for v in shape)
    g = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand((int(np.prod(lead)) if lead else 1, 1, max(1, math.ceil(H / cell)),
                         max(1, math.ceil(W / cell))), generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    return up.view(*lead, H, W).to(device)


def centre_map(height: int, width: int, device: Any = "cpu") -> torch.Tensor:
    """A Gaussian centred on the grid, sigma a quarter of the shorter side, peak 1.

    Args:
        height: the grid's height, in pixels.
        width: the grid's width, in pixels.
        device: where the map goes.

    Returns:
        torch.Tensor: the ``(height, width)`` float32 map.
    """
    sigma = min(height, width) / 4
    ys = torch.arange(height, dtype=torch.float32, device=device) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float32, device=device) + 0.5 - width / 2
    return torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))
