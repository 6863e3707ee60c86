"""What ``score`` returns: :class:`Scores`, the values per method x metric x image x target, their
curves, a leaderboard with bootstrap intervals, its figure and its files.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ...render.colors import colorize, font
from ...render.figures import agg_figure, figure_image
from ...render.files import OutDir, Saved, unique_stems
from ...render.grid import titled
from ...view import View
from .metrics import BASELINES, HIGHER_BETTER, NEEDS_BOXES, ROAD_FRACTIONS


def bootstrap(values: np.ndarray, seed: int = 0, resamples: int = 2000, level: float = 0.95
              ) -> tuple[float, float, float]:
    """The mean and its percentile bootstrap interval (seeded), over the finite values.

    Args:
        values: the values (NaN and infinities are left out).
        seed: seeds the resampling, so the interval repeats.
        resamples: the number of bootstrap resamples.
        level: the interval's coverage.

    Returns:
        tuple[float, float, float]: ``(mean, low, high)``; NaNs when no value is finite, the value
            three times when there is one.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


@dataclass(eq=False)
class Scores(View):
    """Per image x target x method x metric values, curves and a leaderboard.

    Attributes:
        methods: the methods scored, the baselines ``random`` and ``centre`` last (``M``).
        metrics: the metrics, canonical names.
        values: ``{metric: (M, N, T) tensor}`` per method x image x target.
        images: the images' names (``N``).
        targets: the class explained per image x target (``T``), as ``ClassScore``.
        fractions: ``(S,)`` the deleted/inserted fractions of the curves.
        curves: ``{"deletion"|"insertion": (M, N, T, S)}`` the probability along the fractions.
        road_curves: ``{"morf"|"lerf": (M, N, T, F)}`` over :data:`ROAD_FRACTIONS`.
        has_boxes: ``(N, T)`` bool, which items had boxes (the box metrics average over those).
    """

    methods: list[str]
    metrics: list[str]
    values: dict[str, torch.Tensor]
    images: list[str]
    targets: list[list[Any]]  # ClassScore per image x target
    model_name: str = "model"
    layer: str = ""
    steps: int = 20
    seed: int = 0
    tolerance: float = 0.0
    fractions: torch.Tensor | None = None
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    road_curves: dict[str, torch.Tensor] = field(default_factory=dict)
    has_boxes: torch.Tensor | None = None  # (N, T) bool: which items had boxes

    def __repr__(self) -> str:
        return f"Scores({', '.join(self.methods)}; {', '.join(self.metrics)}; images={len(self.images)})"

    # -- tables --------------------------------------------------------------
    def item_values(self, metric: str, k: int) -> np.ndarray:
        """The values of method ``k`` for ``metric`` over the items that have one."""
        v = self.values[metric][k].flatten().double().numpy()
        if metric in NEEDS_BOXES and self.has_boxes is not None:
            v = v[self.has_boxes.flatten().numpy()]
        return v

    def summary(self) -> list[dict[str, Any]]:
        """One row per method x metric: mean, 95% bootstrap interval (seeded), n items."""
        rows = []
        for metric in self.metrics:
            for k, m in enumerate(self.methods):
                v = self.item_values(metric, k)
                mean, lo, hi = bootstrap(v, seed=self.seed)
                rows.append({"method": m, "metric": metric, "mean": mean, "low": lo, "high": hi,
                             "n": int(np.isfinite(v).sum())})
        return rows

    def rows(self) -> list[dict[str, Any]]:
        """One row per image x target x method x metric."""
        out = []
        for i, name in enumerate(self.images):
            for t, s in enumerate(self.targets[i]):
                for k, m in enumerate(self.methods):
                    for metric in self.metrics:
                        if metric in NEEDS_BOXES and self.has_boxes is not None and not bool(self.has_boxes[i, t]):
                            continue
                        out.append({"image": name, "target": int(s.index), "method": m, "metric": metric,
                                    "value": float(self.values[metric][k, i, t])})
        return out

    def ranking(self, metric: str | None = None) -> list[str]:
        """Methods from best to worst by the mean of ``metric`` (default: the first)."""
        metric = metric or self.metrics[0]
        means = {r["method"]: r["mean"] for r in self.summary() if r["metric"] == metric}
        sign = -1 if metric in HIGHER_BETTER else 1
        return sorted(self.methods, key=lambda m: (math.inf if means[m] != means[m] else sign * means[m]))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model_name, "layer": self.layer, "methods": list(self.methods),
            "baselines": [m for m in self.methods if m in BASELINES], "metrics": list(self.metrics),
            "higher_is_better": {m: m in HIGHER_BETTER for m in self.metrics},
            "steps": self.steps, "seed": self.seed, "tolerance": self.tolerance,
            "summary": self.summary(), "images": self.rows(),
        }
        if self.fractions is not None and self.curves:
            d["curves"] = {"fractions": [float(f) for f in self.fractions],
                           **{c: {m: [float(v) for v in self.curves[c][k].flatten(0, 1).mean(0)]
                                  for k, m in enumerate(self.methods)} for c in self.curves}}
        if self.road_curves:
            d["road_fractions"] = list(ROAD_FRACTIONS)
        return d

    # -- pictures ------------------------------------------------------------
    def curves_figure(self) -> Image.Image | None:
        """Mean deletion and insertion curves per method (the baselines dashed), or None."""
        if self.fractions is None or not self.curves:
            return None
        names = [c for c in ("deletion", "insertion") if c in self.curves]
        fig = agg_figure((4.2 * len(names), 3.3))
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        fr = self.fractions.numpy()
        for ax, c in zip(axes, names):
            for k, m in enumerate(self.methods):
                y = self.curves[c][k].flatten(0, 1).mean(0).numpy()
                a = float(np.trapezoid(y, fr)) if hasattr(np, "trapezoid") else float(np.trapz(y, fr))
                ax.plot(fr, y, "--" if m in BASELINES else "-", label=f"{m} (AUC {a:.3f})", linewidth=1.6)
            ax.set_xlabel("fraction of pixels " + ("deleted" if c == "deletion" else "inserted"))
            ax.set_ylabel("target probability")
            ax.set_title(c + (" (lower AUC is better)" if c == "deletion" else " (higher AUC is better)"), fontsize=10)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        return figure_image(fig)

    def table_image(self) -> Image.Image:
        """The leaderboard: methods (best first by the first metric) x metrics, mean [low, high],
        each cell tinted by its rank in its column (green best, red worst)."""
        summ = {(r["method"], r["metric"]): r for r in self.summary()}
        order = self.ranking()
        f, fb = font(13), font(13, bold=True)
        cw, first, rh, pad = 150, 110, 24, 6
        W = first + cw * len(self.metrics) + 2 * pad
        H = rh * (len(order) + 1) + 2 * pad
        img = Image.new("RGB", (W, H), (255, 255, 255))
        d = ImageDraw.Draw(img)
        d.text((pad + 4, pad + 4), "method", fill=(30, 30, 30), font=fb)
        for j, metric in enumerate(self.metrics):
            arrow = "\u2191" if metric in HIGHER_BETTER else "\u2193"
            d.text((pad + first + j * cw + 4, pad + 4), f"{metric} {arrow}", fill=(30, 30, 30), font=fb)
        for j, metric in enumerate(self.metrics):
            means = np.array([summ[(m, metric)]["mean"] for m in order], dtype=np.float64)
            ok = np.where(np.isfinite(means), means, np.nan)
            rank = np.argsort(np.argsort(-ok if metric in HIGHER_BETTER else ok))
            t = rank / max(1, len(order) - 1)
            colours = colorize(np.asarray(0.25 + 0.5 * (1 - t)), 0.0, 1.0, "RdYlGn")
            for r, m in enumerate(order):
                x, y = pad + first + j * cw, pad + rh * (r + 1)
                rgb = tuple(int(v) for v in colours[r])
                tint = tuple(int(255 - 0.45 * (255 - v)) for v in rgb)
                d.rectangle([x, y, x + cw - 2, y + rh - 2], fill=tint)
                s = summ[(m, metric)]
                text = "-" if s["mean"] != s["mean"] else f"{s['mean']:.3f} [{s['low']:.2f}, {s['high']:.2f}]"
                d.text((x + 4, y + 4), text, fill=(20, 20, 20), font=f)
        for r, m in enumerate(order):
            d.text((pad + 4, pad + rh * (r + 1) + 4), m, fill=(110, 110, 110) if m in BASELINES else (20, 20, 20),
                   font=fb if r == 0 else f)
        return img

    def figure(self, **opts: Any) -> Image.Image:
        """The curves per method (when deletion/insertion were scored) above the leaderboard table."""
        table = self.table_image()
        curves = self.curves_figure()
        n = len(self.images)
        title = f"how faithful is each map - {self.model_name}" + (f", layer {self.layer}" if self.layer else "")
        sub = f"{n} image{'s' if n != 1 else ''}; mean [95% bootstrap interval]; baselines: random, centre"
        if curves is None:
            return titled(table, title, sub)
        return titled(curves, title, sub, footer=table)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{m}</th>" for m in self.metrics)
        summ = {(r["method"], r["metric"]): r for r in self.summary()}
        body = "".join("<tr><td>" + m + "</td>" + "".join(
            f"<td>{summ[(m, x)]['mean']:.3f} [{summ[(m, x)]['low']:.3f}, {summ[(m, x)]['high']:.3f}]</td>"
            for x in self.metrics) + "</tr>" for m in self.ranking())
        return f"<table><tr><th>method</th>{head}</tr>{body}</table>"

    # -- files -----------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike, **opts: Any) -> Saved:
        """``summary.json`` (role ``json``: :meth:`to_dict`), ``scores.png`` (role ``figure``),
        ``images/<stem>.csv`` per image (role ``csv``: target, method, metric, value) and, with
        deletion/insertion, ``curves/<stem>.csv`` (role ``curves``: target, method, curve, fraction,
        probability)."""
        out = OutDir(out_dir)
        out.json("json", "summary.json", self.to_dict())
        out.png("figure", "scores.png", self.figure())
        rows = self.rows()
        stems = unique_stems(self.images)
        for i, (name, stem) in enumerate(zip(self.images, stems)):
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["image", "target", "method", "metric", "value"])
            for r in rows:
                if r["image"] == name:
                    w.writerow([name, r["target"], r["method"], r["metric"], f"{r['value']:.6g}"])
            path = out.text("csv", f"images/{stem}.csv", buf.getvalue())
            rec: dict[str, Any] = {"image": name, "csv": str(path)}
            if self.curves and self.fractions is not None:
                buf = io.StringIO()
                w = csv.writer(buf)
                w.writerow(["image", "target", "method", "curve", "fraction", "probability"])
                for c, cv in self.curves.items():
                    for k, m in enumerate(self.methods):
                        for t, s in enumerate(self.targets[i]):
                            for f, p in zip(self.fractions.tolist(), cv[k, i, t].tolist()):
                                w.writerow([name, s.index, m, c, f"{f:.6g}", f"{p:.6g}"])
                rec["curves"] = str(out.text("curves", f"curves/{stem}.csv", buf.getvalue()))
            out.record(**rec)
        return out.saved()
