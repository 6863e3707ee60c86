"""Runs side by side: the lessons' point (dense vs conv, dropout vs none, augmentation vs none).

``compare(runs)`` evaluates every run on its own test split and returns a :class:`Comparison`
(a View): the training curves overlaid, one table of test metrics, parameter counts and time,
the confusion matrices side by side, and the same test images (the hardest for all runs: the
highest mean loss over the runs, among the test images every run holds) with each run's
prediction and Grad-CAM of its predicted class.

Runs of different data cannot be compared (one line naming both): the data source (its kind,
path, label kind, scale, or the digest of arrays given in memory) and the class names must agree.
Runs trained on different image sizes (``size=``) or splits of the same data can: the shared
images are the test images they have in common.

>>> cmp = compare(["runs/dense", "runs/conv"])        # doctest: +SKIP
>>> cmp.table()[0]["accuracy"], cmp.figure().size     # doctest: +SKIP
>>> cmp.save("runs/dense-vs-conv").files              # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from ..errors import LayerError, RunError, SpecError
from ..lens import explain
from ..models.run import Run
from ..render.colors import font
from ..render.confusion import confusion_image
from ..render.figures import agg_figure, figure_image
from ..render.files import OutDir, Saved
from ..render.grid import INK, MUTED, grid
from ..view import View
from .evaluate import Evaluation, evaluate

#: the fields of a run's config["data"] that say which data it was trained on
DATA_KEYS = ("kind", "path", "label", "scale", "digest")
#: one colour per run (matplotlib's tab10), used in the curves and the table alike
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def data_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a run was trained on, as compared across runs (kind, path, label, scale, digest)."""
    d = config.get("data") or {}
    return {k: d[k] for k in DATA_KEYS if d.get(k) is not None}


def _describe(ident: dict[str, Any]) -> str:
    text = f"{ident.get('kind')}:{ident['path']}" if ident.get("path") else str(ident.get("kind"))
    extra = [f"{k}={ident[k]}" for k in ("label", "scale") if k in ident]
    if "digest" in ident:
        extra.append(f"arrays {str(ident['digest'])[:12]}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def param_counts(run: Run) -> tuple[int, int]:
    """(total, trainable) parameters of a run's model as trained (frozen layers not trainable)."""
    counted = (run.config.get("result") or {}).get("params")
    if isinstance(counted, dict) and "total" in counted and "trainable" in counted:
        return int(counted["total"]), int(counted["trainable"])
    total = sum(p.numel() for p in run.module.parameters())
    return total, sum(p.numel() for p in run.module.parameters() if p.requires_grad)


def _names(runs: Sequence[Run]) -> list[str]:
    """A short distinct name per run: its directory name (the path when two share a name)."""
    names = [r.path.name if r.path is not None else f"run {i + 1}" for i, r in enumerate(runs)]
    if len(set(names)) < len(names):
        names = [str(r.path) if r.path is not None else f"run {i + 1}" for i, r in enumerate(runs)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


@dataclass
class Comparison(View):
    """Several runs of the same data side by side (see the module docstring).

    ``names``: one per run; ``runs``/``evaluations``: the runs and their test evaluations;
    ``params``: ``(total, trainable)`` per run; ``shared``: the compared test images, one dict
    each (``id``, ``true``, and per run ``predicted``, ``p_predicted``, ``loss``);
    ``shared_images``: per run, its uint8 ``(n, C, H, W)`` of those images (each at the run's own
    input size); ``cams``: per run, its Grad-CAM overlays of the predicted class (None for a run
    with no layer to explain, with the reason in ``cam_notes``).
    """

    names: list[str]
    runs: list[Run]
    evaluations: list[Evaluation]
    params: list[tuple[int, int]]
    data: dict[str, Any]
    shared: list[dict[str, Any]] = field(default_factory=list)
    shared_images: list[torch.Tensor] = field(default_factory=list)
    cams: list[list[Image.Image] | None] = field(default_factory=list)
    cam_notes: list[str | None] = field(default_factory=list)
    n_common: int = 0

    # -- numbers -------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per run: arch, input size, parameter counts, test metrics, epochs and time."""
        rows = []
        for name, run, ev, (total, trainable) in zip(self.names, self.runs, self.evaluations, self.params):
            s = run.summary()
            rows.append({"run": name, "path": s["path"], "arch": s["arch"],
                         "input_size": "x".join(str(v) for v in s["input_size"][1:]) + f"x{s['input_size'][0]}",
                         "params": total, "trainable": trainable, "non_trainable": total - trainable,
                         "accuracy": ev.metrics["accuracy"], "balanced_accuracy": ev.metrics["balanced_accuracy"],
                         "macro_f1": ev.metrics["macro_f1"], "n_test": ev.metrics["n_test"],
                         "epochs": s["epochs"], "best_epoch": s["best_epoch"], "seconds": s["seconds"],
                         "augment": (run.config.get("train") or {}).get("augment") or ""})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.table(), "data": dict(self.data), "class_names": self.evaluations[0].class_names,
                "confusion": {n: ev.metrics["confusion"] for n, ev in zip(self.names, self.evaluations)},
                "history": {n: r.history_columns() for n, r in zip(self.names, self.runs)},
                "shared": [dict(r) for r in self.shared], "common_test_images": self.n_common,
                "cams": [c is not None for c in self.cams], "cam_notes": list(self.cam_notes)}

    # -- pictures ------------------------------------------------------------------------
    def curves_figure(self) -> Image.Image:
        """Loss and accuracy per epoch, every run one colour: validation solid, training dashed."""
        fig = agg_figure((10, 3.8))
        ax_loss, ax_acc = fig.subplots(1, 2)
        for k, (name, run) in enumerate(zip(self.names, self.runs)):
            colour = COLOURS[k % len(COLOURS)]
            x = list(range(1, len(run.history) + 1))
            for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
                for split, style in (("val", "-"), ("train", "--")):
                    pts = [(e, r.get(f"{split}_{key}")) for e, r in zip(x, run.history)
                           if isinstance(r.get(f"{split}_{key}"), (int, float))]
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, linewidth=1.6,
                                marker="o" if len(pts) < 30 else None, markersize=2.5,
                                label=f"{name} ({'validation' if split == 'val' else 'training'})")
        for ax, label in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        ax_acc.set_ylim(top=1.01)
        handles, labels = ax_loss.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
        fig.suptitle("training curves (solid: validation, dashed: training)", fontsize=10)
        fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 4), 1, 1))
        return figure_image(fig)

    def table_figure(self) -> Image.Image:
        """The table of :meth:`table` drawn as text, one colour swatch per run."""
        cols = [("run", "run"), ("arch", "arch"), ("input", "input_size"), ("params", "params"),
                ("trainable", "trainable"), ("accuracy", "accuracy"), ("balanced", "balanced_accuracy"),
                ("macro F1", "macro_f1"), ("epochs", "epochs"), ("time", "seconds")]
        rows = self.table()
        best = max(r["accuracy"] for r in rows)

        def cell(r: dict[str, Any], key: str) -> str:
            v = r[key]
            if key in ("params", "trainable"):
                return f"{v:,}"
            if key in ("accuracy", "balanced_accuracy", "macro_f1"):
                return f"{v:.4f}"
            if key == "seconds":
                return "" if v is None else f"{v:.1f}s"
            if key == "arch" and len(str(v)) > 48:
                return str(v)[:47] + "…"
            return "" if v is None else str(v)

        f, fb = font(13), font(13, bold=True)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        texts = [[cell(r, k) for _, k in cols] for r in rows]
        widths = [int(max([probe.textlength(h, font=fb)] + [probe.textlength(t[i], font=f) for t in texts])) + 18
                  for i, (h, _) in enumerate(cols)]
        sw, line, pad = 14, 22, 10
        W = pad * 2 + sw + 6 + sum(widths)
        H = pad * 2 + line * (len(rows) + 1) + 18
        img = Image.new("RGB", (W, H), "white")
        d = ImageDraw.Draw(img)
        x0 = pad + sw + 6
        x = x0
        for (h, _), w in zip(cols, widths):
            d.text((x, pad), h, fill=INK, font=fb)
            x += w
        d.line((pad, pad + line - 3, W - pad, pad + line - 3), fill=MUTED)
        for k, (r, t) in enumerate(zip(rows, texts)):
            y = pad + line * (k + 1)
            d.rectangle((pad, y + 2, pad + sw, y + 2 + sw), fill=COLOURS[k % len(COLOURS)])
            x = x0
            for i, ((_, key), w) in enumerate(zip(cols, widths)):
                bold = key == "accuracy" and r["accuracy"] == best and len(rows) > 1
                d.text((x, y), t[i], fill=INK, font=fb if bold else f)
                x += w
        d.text((pad, H - pad - 14), f"test metrics on each run's own test split ({self.data_text()}); "
               f"time: the whole training run", fill=MUTED, font=font(11))
        return img

    def data_text(self) -> str:
        return _describe(self.data)

    def confusion_figure(self) -> Image.Image:
        """The runs' confusion matrices side by side, each titled with its run and accuracy."""
        pics = [confusion_image(ev.metrics["confusion"], ev.class_names,
                                title=f"{name}: accuracy {ev.accuracy:.3f} (n={ev.metrics['n_test']})")
                for name, ev in zip(self.names, self.evaluations)]
        return _row(pics)

    def shared_figure(self) -> Image.Image | None:
        """The same test images for every run: a row per run (its Grad-CAM of the predicted class,
        or the picture when the run has no layer to explain), captioned with its prediction."""
        if not self.shared:
            return None
        first = self.shared_images[0]
        pictures = [_pil(t) for t in first]
        cells = [pictures]
        caps = [[f"{Path(r['id']).name[:18]}\ntrue {r['true'][:16]}" for r in self.shared]]
        for k in range(len(self.names)):
            overlays = self.cams[k] if k < len(self.cams) and self.cams[k] is not None else \
                [_pil(t) for t in self.shared_images[k]]
            cells.append(list(overlays))
            caps.append([f"{'ok' if r['runs'][k]['predicted'] == r['true'] else 'wrong'}: "
                         f"{r['runs'][k]['predicted'][:14]}\np {r['runs'][k]['p_predicted']:.2f}, "
                         f"loss {r['runs'][k]['loss']:.2f}" for r in self.shared])
        h, w = first.shape[-2:]
        side = 112 if max(h, w) <= 112 else 160
        scale = side / max(h, w)
        cell = (max(96, round(w * scale)), max(40, round(h * scale)))
        rows = [f"{n} (no CAM)" if k < len(self.cam_notes) and self.cam_notes[k] else n
                for k, n in enumerate(self.names)]
        sub = f"{len(self.shared)} hardest of {self.n_common} shared test images; Grad-CAM of each prediction"
        return grid(cells, row_titles=["image", *rows], col_titles=caps, cell=cell,
                    title="the same images, every run", subtitle=sub, font_size=12)

    def figure(self, **_opts: Any) -> Image.Image:
        """Everything in one picture: the table, the curves, the confusion matrices, the shared images."""
        parts = [self.table_figure(), self.curves_figure(), self.confusion_figure()]
        shared = self.shared_figure()
        if shared is not None:
            parts.append(shared)
        return _column(parts)

    def save(self, out_dir: str | os.PathLike, **_opts: Any) -> Saved:
        """Write ``comparison.png`` (role ``figure``), ``curves.png``, ``confusion.png``,
        ``shared.png`` (the same images per run), ``comparison.json`` (:meth:`to_dict`) and
        ``comparison.csv`` (the table) under ``out_dir``, each atomically."""
        out = OutDir(out_dir)
        out.png("figure", "comparison.png", self.figure())
        out.png("curves", "curves.png", self.curves_figure())
        out.png("confusion", "confusion.png", self.confusion_figure())
        shared = self.shared_figure()
        if shared is not None:
            out.png("shared", "shared.png", shared)
        out.json("json", "comparison.json", self.to_dict())
        rows = self.table()
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        out.text("table", "comparison.csv", buf.getvalue())
        for r in rows:
            out.record(run=r["run"], path=r["path"], accuracy=r["accuracy"], params=r["params"])
        return out.saved()


def _pil(t: torch.Tensor) -> Image.Image:
    a = t.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).convert("RGB")


def _row(pics: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    out = Image.new("RGB", (sum(p.width for p in pics) + gap * (len(pics) - 1), max(p.height for p in pics)), "white")
    x = 0
    for p in pics:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def _column(pics: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    out = Image.new("RGB", (max(p.width for p in pics), sum(p.height for p in pics) + gap * (len(pics) - 1)), "white")
    y = 0
    for p in pics:
        out.paste(p, (0, y))
        y += p.height + gap
    return out


def _as_run(r: Any, device: str) -> Run:
    if isinstance(r, Run):
        return r
    if not isinstance(r, (str, os.PathLike)):
        raise SpecError(f"runs: {type(r).__name__} is not a run (pass run directories or Run objects)", param="runs")
    return Run.load(r, device=device)


def compare(runs: Sequence[Any], *, top_n: int = 6, cams: bool = True, device: str = "cpu",
            data: Any = None) -> Comparison:
    """Compare two or more runs (directories or :class:`Run` objects) of the same data.

    Every run is evaluated on its own test split (``data``: read instead of each run's recorded
    source, as :func:`evaluate` takes it); ``top_n`` test images that all runs hold (the hardest:
    highest mean loss) are shown for every run, with its Grad-CAM of the predicted class when
    ``cams``. RunError when the runs were trained on different data or class names.
    """
    if isinstance(runs, (str, os.PathLike, Run)):
        runs = [runs]
    runs = list(runs)
    if len(runs) < 2:
        raise SpecError(f"runs: compare needs at least two runs (got {len(runs)})", param="runs")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise SpecError(f"top_n must be a whole number of at least 0 (got {top_n!r})", param="top_n")
    loaded = [_as_run(r, device) for r in runs]
    names = _names(loaded)
    ident = data_identity(loaded[0].config)
    for name, run in zip(names[1:], loaded[1:]):
        other = data_identity(run.config)
        if other != ident:
            raise RunError(f"runs: {name} was trained on {_describe(other)} and {names[0]} on {_describe(ident)}; "
                           f"only runs of the same data can be compared", param="runs")
        if run.class_names != loaded[0].class_names:
            raise RunError(f"runs: {name} has classes {', '.join(run.class_names[:6])} and {names[0]} "
                           f"{', '.join(loaded[0].class_names[:6])}; only runs of the same classes can be compared",
                           param="runs")
    sets, evals = [], []
    for run in loaded:
        ds, split = run.dataset(data)
        sets.append((ds, split))
        evals.append(evaluate(run, top_n=0, cams=False, device=device, data=ds))
    # the test images every run holds, in the first run's order
    index = [{i: k for k, i in enumerate(ev.ids)} for ev in evals]
    common = [i for i in evals[0].ids if all(i in ix for ix in index[1:])]
    losses = torch.stack([F.cross_entropy(ev.logits[[ix[i] for i in common]], ev.labels[[ix[i] for i in common]],
                                          reduction="none") for ev, ix in zip(evals, index)]) \
        if common else torch.zeros(len(evals), 0)
    order = torch.argsort(losses.mean(0), descending=True)[:top_n].tolist() if common else []
    picked = [common[k] for k in order]
    shared, images, overlays, notes = [], [], [], []
    for run, _, ix, (ds, split) in zip(loaded, evals, index, sets):
        test = split.test.tolist()
        rows = [ix[i] for i in picked]
        images.append(ds.images[[test[r] for r in rows]].clone() if rows else torch.zeros(0, *run.config["input_size"],
                                                                                         dtype=torch.uint8))
        cam, note = None, None
        if cams and rows:
            try:
                model = run.model().to(device)
                ex = explain(model, images[-1].float().to(model.device), method="gradcam")
                cam = [ex.overlay(j, 0) for j in range(len(rows))]
            except LayerError as exc:  # an all-dense model has no layer to explain
                note = str(exc)
        overlays.append(cam)
        notes.append(note)
    for i in picked:
        per_run = []
        for ev, ix in zip(evals, index):
            r = ix[i]
            p = ev.logits[r].softmax(-1)
            pred = int(p.argmax())
            per_run.append({"predicted": ev.class_names[pred], "p_predicted": float(p[pred]),
                            "loss": float(F.cross_entropy(ev.logits[r:r + 1], ev.labels[r:r + 1]))})
        shared.append({"id": i, "true": evals[0].class_names[int(evals[0].labels[index[0][i]])], "runs": per_run})
    return Comparison(names, loaded, evals, [param_counts(r) for r in loaded], ident, shared, images,
                      overlays, notes, len(common))
