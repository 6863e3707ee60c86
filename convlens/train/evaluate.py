"""Evaluation of a run on its own test split: metrics, confusion matrix, top losses.

The test items are the ones saved in the run's ``splits.json``, re-read from the
same data source (:meth:`Run.dataset`), so evaluation is exactly reproducible.  The
top-losses grid shows the worst mistakes with their true and predicted labels and the
Grad-CAM of both classes (from :func:`convlens.lens.explain`).

>>> ev = evaluate("runs/faces")                    # doctest: +SKIP
>>> ev.accuracy, ev.to_dict()["confusion"][:2]     # doctest: +SKIP
>>> ev.save("runs/faces/eval").files               # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import LayerError, RunError, SpecError
from ..lens import explain
from ..models.run import Run
from ..render.colors import font
from ..render.confusion import confusion_image, top_losses_image
from ..render.files import OutDir, Saved
from ..view import View


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """accuracy, balanced_accuracy, macro_f1, per_class, confusion, n_test (scikit-learn)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    y = labels.cpu().numpy()
    p = logits.argmax(-1).cpu().numpy()
    ks = list(range(len(class_names)))
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=ks, zero_division=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bal = balanced_accuracy_score(y, p)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "balanced_accuracy": float(bal),
        "macro_f1": float(f1_score(y, p, labels=ks, average="macro", zero_division=0)),
        "per_class": {name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                             "support": int(sup[i])} for i, name in enumerate(class_names)},
        "confusion": confusion_matrix(y, p, labels=ks).tolist(),
        "n_test": int(len(y)),
    }


@dataclass
class Evaluation(View):
    """Test-split metrics of a run, with the logits and the worst mistakes (a View).

    ``top_images``: uint8 ``(n, C, H, W)`` of the top losses; ``top_heatmaps``: their Grad-CAM
    ``(n, 2, H, W)`` for the true and the predicted class, ``top_cams`` the same as overlays
    (PIL, ``[true, predicted]`` per item); ``cams_note`` says why there are none when CAMs were
    asked for but the model has no layer to explain.
    """

    metrics: dict[str, Any]
    class_names: list[str]
    labels: torch.Tensor
    logits: torch.Tensor
    ids: list[str]
    top_losses: list[dict[str, Any]] = field(default_factory=list)
    top_images: torch.Tensor | None = None
    top_cams: list[list[Any]] | None = None
    run_path: str | None = None
    top_heatmaps: torch.Tensor | None = None
    cams_note: str | None = None

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "top_losses": [dict(r) for r in self.top_losses], "run": self.run_path,
                "cams": self.top_cams is not None, "cams_note": self.cams_note}

    # -- pictures ---------------------------------------------------------------------
    def confusion_figure(self) -> Image.Image:
        """The confusion matrix (rows: true classes; colour: recall)."""
        return confusion_image(self.metrics["confusion"], self.class_names,
                               title=f"test accuracy {self.accuracy:.3f} (n={self.metrics['n_test']})")

    def top_losses_figure(self) -> Image.Image | None:
        """The worst mistakes, one row each (picture, then Grad-CAM of true and predicted); None if none."""
        if self.top_images is None or not self.top_losses:
            return None
        imgs = []
        for t in self.top_images:
            a = t.permute(1, 2, 0).numpy()
            imgs.append(a[..., 0] if a.shape[-1] == 1 else a)
        caps = [f"{Path(r['id']).name}\ntrue {r['true']} / pred {r['predicted']}\n"
                f"loss {r['loss']:.2f}, p(pred) {r['p_predicted']:.2f}" for r in self.top_losses]
        return top_losses_image(imgs, caps, self.top_cams)

    def figure(self, **_opts: Any) -> Image.Image:
        """The summary picture: the confusion matrix with the per-class metrics under it, beside the
        top losses (when there are some), laid out in as many side-by-side blocks as keep the picture
        about as tall as the matrix and its table, so that no large area is left blank."""
        left = _stack([self.confusion_figure(), self.class_table_figure()])
        losses = self.top_losses_figure()
        if losses is None:
            return left
        n = len(self.top_losses)
        row_h = losses.height / max(n, 1)
        blocks = max(1, min(3, n, round(losses.height / max(left.height, 2.5 * row_h))))
        per = -(-n // blocks)
        parts = [losses] if blocks == 1 else [self._losses_block(k, k + per) for k in range(0, n, per)]
        out = Image.new("RGB", (left.width + sum(p.width for p in parts), max(left.height, *(p.height for p in parts))),
                        "white")
        out.paste(left, (0, 0))
        x = left.width
        for p in parts:
            out.paste(p, (x, 0))
            x += p.width
        return out

    def _losses_block(self, start: int, stop: int) -> Image.Image:
        """Rows ``start:stop`` of :meth:`top_losses_figure`."""
        sub = Evaluation(self.metrics, self.class_names, self.labels, self.logits, self.ids,
                         self.top_losses[start:stop], self.top_images[start:stop],
                         self.top_cams[start:stop] if self.top_cams is not None else None)
        return sub.top_losses_figure()

    def class_table_figure(self) -> Image.Image:
        """Precision, recall, F1 and support of each class, as a small table picture."""
        per = self.metrics.get("per_class") or {}
        rows = [("class", "precision", "recall", "F1", "n")]
        for name in self.class_names[:40]:
            c = per.get(name) or {}
            rows.append((str(name)[:24], *(f"{c.get(k, float('nan')):.3f}" for k in ("precision", "recall", "f1")),
                         str(c.get("support", ""))))
        if len(self.class_names) > 40:
            rows.append((f"... {len(self.class_names) - 40} more in metrics.json", "", "", "", ""))
        f, pad, line = font(13), 10, 18
        widths = [max(int(f.getlength(r[i])) for r in rows) + 14 for i in range(5)]
        img = Image.new("RGB", (sum(widths) + 2 * pad, len(rows) * line + 2 * pad), "white")
        from PIL import ImageDraw

        d = ImageDraw.Draw(img)
        for j, r in enumerate(rows):
            x = pad
            for i, cell in enumerate(r):
                d.text((x, pad + j * line), cell, fill="black" if j else (60, 60, 60), font=f)
                x += widths[i]
        return img

    def save(self, out_dir: str | os.PathLike, **_opts: Any) -> Saved:
        """Write ``metrics.json`` (role ``metrics``), ``confusion.png`` (``confusion``),
        ``top_losses.png`` (``top_losses``) and ``top_losses_heatmaps.npy`` (``heatmap``, the
        Grad-CAM maps ``(n, 2, H, W)``, when computed) under ``out_dir``, each atomically."""
        out = OutDir(out_dir)
        out.json("metrics", "metrics.json", self.to_dict())
        out.png("confusion", "confusion.png", self.confusion_figure())
        grid = self.top_losses_figure()
        if grid is not None:
            out.png("top_losses", "top_losses.png", grid)
        if self.top_heatmaps is not None:
            out.npy("heatmap", "top_losses_heatmaps.npy", self.top_heatmaps.cpu().numpy().astype(np.float32))
        for i, r in enumerate(self.top_losses):
            out.record(rank=i + 1, id=r["id"], true=r["true"], predicted=r["predicted"], loss=r["loss"],
                       heatmap=i if self.top_heatmaps is not None else None)
        return out.saved()


#: drawn on a Grad-CAM that is zero everywhere (the ReLU of the weighted maps left nothing)
NO_EVIDENCE = "no positive evidence for this class"


def top_loss_cams(model, images: torch.Tensor, true: list[int],
                  pred: list[int]) -> tuple[torch.Tensor, list[list[Any]]]:
    """Grad-CAM maps ``(n, 2, H, W)`` and overlays (``[true, predicted]`` per image) of raw-pixel images;
    an overlay of an all-zero map carries the note :data:`NO_EVIDENCE` instead of looking like a
    map of uniformly low evidence."""
    maps, overlays = [], []
    for i in range(len(true)):  # at most top_n images; the targets differ per image
        ex = explain(model, images[i:i + 1].float().to(model.device), method="gradcam",
                     target=[int(true[i]), int(pred[i])])
        m = ex.heatmaps[0].detach().float().cpu()
        maps.append(m)
        overlays.append([with_note(ex.overlay(0, t, note=False), NO_EVIDENCE) if not bool((m[t] > 0).any())
                         else ex.overlay(0, t)
                         for t in range(2)])
    return torch.stack(maps), overlays


def with_note(img: Image.Image, text: str, min_side: int = 192) -> Image.Image:
    """``img`` enlarged (nearest neighbours) to at least ``min_side`` pixels, with ``text`` written
    on a white band across its bottom."""
    from PIL import ImageDraw

    scale = max(1, -(-min_side // max(1, min(img.size))))
    out = img.convert("RGB").resize((img.width * scale, img.height * scale), Image.NEAREST)
    f = font(max(10, out.width // 16))
    words, lines = text.split(), [""]
    for w in words:  # wrap to the picture's width
        trial = f"{lines[-1]} {w}".strip()
        if f.getlength(trial) <= out.width - 8 or not lines[-1]:
            lines[-1] = trial
        else:
            lines.append(w)
    line = int(f.size * 1.25)
    band = line * len(lines) + 6
    d = ImageDraw.Draw(out)
    d.rectangle((0, out.height - band, out.width, out.height), fill="white")
    for k, t in enumerate(lines):
        d.text((4, out.height - band + 3 + k * line), t, fill=(150, 0, 0), font=f)
    return out


def evaluate(run: Any, *, top_n: int = 9, cams: bool = True, device: str = "cpu", data: Any = None,
             batch_size: int = 256) -> Evaluation:
    """Evaluate a run (a :class:`~convlens.models.run.Run` or its directory) on its test split."""
    if top_n < 0:
        raise SpecError(f"top_n must be at least 0 (got {top_n})", param="top_n")
    if batch_size < 1:
        raise SpecError(f"batch_size must be at least 1 (got {batch_size})", param="batch_size")
    if not isinstance(run, Run):
        run = Run.load(run, device=device)
    ds, split = run.dataset(data)
    if len(split.test) == 0:
        raise RunError(f"{run.path}: the run has an empty test split")
    model = run.model().to(device)
    x, y = ds.images[split.test], ds.labels[split.test]
    if tuple(x.shape[1:]) != tuple(run.config["input_size"]):
        raise RunError(f"{run.path}: its data now has images of {tuple(x.shape[1:])}, the run was trained on "
                       f"{tuple(run.config['input_size'])}")
    module = model.module.eval()
    with torch.inference_mode():
        logits = torch.cat([module(x[i:i + batch_size].float().to(model.device)).float().cpu()
                            for i in range(0, len(x), batch_size)])
    metrics = metrics_from_logits(logits, y, run.class_names)
    losses = F.cross_entropy(logits, y, reduction="none")
    probs = logits.softmax(-1)
    pred = logits.argmax(-1)
    ids = [ds.ids[i] for i in split.test.tolist()]
    order = torch.argsort(losses, descending=True)[:top_n]
    top = [{"id": ids[i], "true": run.class_names[int(y[i])], "predicted": run.class_names[int(pred[i])],
            "loss": float(losses[i]), "p_predicted": float(probs[i, pred[i]]), "p_true": float(probs[i, y[i]])}
           for i in order.tolist()]
    top_images = x[order].clone() if len(order) else None
    heatmaps, overlays, note = None, None, None
    if cams and len(order):
        try:
            heatmaps, overlays = top_loss_cams(model, x[order], [int(y[i]) for i in order],
                                               [int(pred[i]) for i in order])
        except LayerError as exc:  # a model with no spatial layer to explain (an all-fc arch)
            note = str(exc)
    return Evaluation(metrics, run.class_names, y, logits, ids, top, top_images, overlays,
                      str(run.path) if run.path else None, heatmaps, note)


def _stack(parts: Sequence[Image.Image]) -> Image.Image:
    """Pictures one under the other, left-aligned, on white."""
    out = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    return out
