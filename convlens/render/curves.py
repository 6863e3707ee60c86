"""Training curves: loss and accuracy per epoch, training vs validation.

Drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas: no global backend is
switched (``matplotlib.use`` would change a notebook's), and nothing goes through pyplot.

>>> fig = plot_history([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_accuracy": 0.5,
...                      "val_accuracy": 0.4}, {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6,
...                      "train_accuracy": 0.8, "val_accuracy": 0.7}])
>>> len(fig.axes)
2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from .figures import agg_figure, figure_image
from .files import save_png


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def plot_history(history: Sequence[dict[str, Any]], title: str | None = None):
    """A matplotlib Figure (Agg canvas) with two panels (loss, accuracy); phases are marked."""
    fig = agg_figure((9, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    x = list(range(1, len(history) + 1))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        for split, style in (("train", "-"), ("val", "-")):
            ys = [_num(r.get(f"{split}_{key}")) for r in history]
            pts = [(a, b) for a, b in zip(x, ys) if b is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", markersize=2.5,
                        label="training" if split == "train" else "validation")
        phases = [r.get("phase", "") for r in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="0.6", linestyle="--", linewidth=1)
                ax.text(i + 0.6, ax.get_ylim()[1], phases[i], va="top", fontsize=8, color="0.4")
        best = [i for i, r in enumerate(history, 1) if r.get("best")]
        if best:
            ax.axvline(best[-1], color="tab:green", alpha=0.3, linewidth=4, label="kept (best)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if history:
        ax_acc.set_ylim(top=1.01)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def curves_image(history: Sequence[dict[str, Any]], title: str | None = None) -> Image.Image:
    """The curves of :func:`plot_history` as a PIL image."""
    return figure_image(plot_history(history, title))


def save_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write ``curves.png`` atomically (see :func:`plot_history`)."""
    return save_png(curves_image(history, title), path)
