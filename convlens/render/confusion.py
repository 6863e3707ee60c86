"""Confusion matrix pictures with class names, and the top-losses grid.

Drawn on Figures with their own Agg canvas (:func:`convlens.render.figures.agg_figure`): no
global backend switch.  ``*_image`` give PIL images.

>>> fig = plot_confusion([[5, 1], [0, 6]], ["cat", "dog"])
>>> fig.axes[0].get_xlabel()
'predicted'
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from .figures import agg_figure, figure_image


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str | None = None):
    """Counts in each cell, colour by row-normalised rate (recall), true classes on rows."""
    m = np.asarray(matrix, dtype=float)
    n = len(class_names)
    rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = min(14.0, max(4.2, 0.45 * n + 2))
    longest = max((len(str(c)) for c in class_names), default=1)
    fig = agg_figure((side + 0.8 + 0.06 * longest, side + (0.06 * longest if n > 4 else 0)))
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=list(class_names), rotation=60 if n > 4 else 0, ha="right" if n > 4 else "center",
                  fontsize=8 if n > 10 else 10)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=8 if n > 10 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7 if n > 10 else 9,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def top_losses_grid(images: Sequence[Any], captions: Sequence[str], cams: Sequence[Sequence[Any]] | None = None,
                    cam_titles: Sequence[str] = ("Grad-CAM: true", "Grad-CAM: predicted")):
    """A figure: one row per image (the picture, then optional CAM overlays), captioned."""
    if not cams and len(images) > 1:  # pictures only (a dense model has no CAM): wrap into rows
        n = len(images)
        per_row = min(n, 5 if n > 4 else n)
        nrows = -(-n // per_row)
        fig = agg_figure((2.4 * per_row, 2.7 * nrows))
        axes = np.atleast_2d(fig.subplots(nrows, per_row, squeeze=False))
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= n:
                ax.axis("off")
                continue
            arr = np.asarray(images[k])
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(captions[k], fontsize=8)
        fig.tight_layout()
        return fig
    rows = len(images)
    cols = 1 + (len(cams[0]) if cams else 0)
    fig = agg_figure((2.4 * cols, 2.9 * max(rows, 1)))
    axes = np.atleast_2d(fig.subplots(max(rows, 1), cols, squeeze=False))
    for r in range(rows):
        panels = [images[r]] + (list(cams[r]) if cams else [])
        for c, img in enumerate(panels):
            ax = axes[r, c]
            arr = np.asarray(img)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_title(captions[r], fontsize=8)
            elif r == 0:
                ax.set_title(cam_titles[c - 1], fontsize=8)
    fig.tight_layout()
    return fig


def confusion_image(matrix: Sequence[Sequence[int]], class_names: Sequence[str],
                    title: str | None = None) -> Image.Image:
    """:func:`plot_confusion` as a PIL image."""
    return figure_image(plot_confusion(matrix, class_names, title))


def top_losses_image(images: Sequence[Any], captions: Sequence[str], cams: Sequence[Sequence[Any]] | None = None,
                     cam_titles: Sequence[str] = ("Grad-CAM: true", "Grad-CAM: predicted")) -> Image.Image:
    """:func:`top_losses_grid` as a PIL image."""
    return figure_image(top_losses_grid(images, captions, cams, cam_titles))
