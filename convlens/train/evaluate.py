"""Evaluation of a run on its own test split: metrics, confusion matrix, top losses.

The test items are the ones saved in the run's ``splits.json``, re-read from the
same data source, so evaluation is exactly reproducible.  The top-losses grid
shows the worst mistakes with their true and predicted labels and, when the CAM
capability (:mod:`convlens.lens.cam`) is present, the Grad-CAM of both classes.

>>> ev = evaluate("runs/faces")                    # doctest: +SKIP
>>> ev.accuracy, ev.to_dict()["confusion"][:2]     # doctest: +SKIP
>>> ev.save("runs/faces/eval")                     # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import RunError


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """accuracy, balanced_accuracy, macro_f1, per_class, confusion, n_test (scikit-learn)."""
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support)

    y = labels.cpu().numpy()
    p = logits.argmax(-1).cpu().numpy()
    ks = list(range(len(class_names)))
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=ks, zero_division=0)
    import warnings

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
class Evaluation:
    """Test-split metrics of a run, with the logits and the worst mistakes."""

    metrics: dict[str, Any]
    class_names: list[str]
    labels: torch.Tensor
    logits: torch.Tensor
    ids: list[str]
    top_losses: list[dict[str, Any]] = field(default_factory=list)
    top_images: torch.Tensor | None = None  # uint8 (n, C, H, W)
    top_cams: list[list[Any]] | None = None  # per top item: [true overlay, predicted overlay] (PIL)
    run_path: str | None = None

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "top_losses": self.top_losses, "run": self.run_path}

    def confusion_figure(self):
        from ..render.confusion import plot_confusion

        return plot_confusion(self.metrics["confusion"], self.class_names,
                              title=f"test accuracy {self.accuracy:.3f} (n={self.metrics['n_test']})")

    def top_losses_figure(self):
        from ..render.confusion import top_losses_grid

        if self.top_images is None or not self.top_losses:
            return None
        imgs = []
        for t in self.top_images:
            a = t.permute(1, 2, 0).numpy()
            imgs.append(a[..., 0] if a.shape[-1] == 1 else a)
        caps = [f"{Path(r['id']).name}\ntrue {r['true']} / pred {r['predicted']}\n"
                f"loss {r['loss']:.2f}, p(pred) {r['p_predicted']:.2f}" for r in self.top_losses]
        return top_losses_grid(imgs, caps, self.top_cams)

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.confusion_figure().savefig(buf, format="png")
        return buf.getvalue()

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``metrics.json``, ``confusion.png`` and ``top_losses.png`` under ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)

        def atomic(name: str, write) -> None:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, out / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

        atomic("metrics.json", lambda p: Path(p).write_text(json.dumps(self.to_dict(), indent=2)))
        atomic("confusion.png", lambda p: self.confusion_figure().savefig(p, format="png"))
        fig = self.top_losses_figure()
        if fig is not None:
            atomic("top_losses.png", lambda p: fig.savefig(p, format="png"))
        return out


def load_run_data(run) -> tuple[Any, Any]:
    """The run's data source re-read, and its Split (from splits.json)."""
    from ..data.sources import load_source
    from ..data.splits import Split

    d = run.config["data"]
    kind = d.get("kind")
    if kind == "digits":
        spec = "digits"
    elif kind in ("folder", "cmu-faces", "mnist"):
        spec = f"{kind}:{d['path']}"
    else:
        raise RunError(f"{run.path}: its data source {kind!r} cannot be re-read; pass data= to evaluate")
    ds = load_source(spec, label=d.get("label"), scale=d.get("scale"))
    if not run.splits:
        raise RunError(f"{run.path}: no splits.json, so the test split is unknown")
    return ds, Split.from_ids(run.splits, ds, what=f"{run.path}/splits.json")


def _cams(model, images: torch.Tensor, true: list[int], pred: list[int]) -> list[list[Any]] | None:
    """Grad-CAM overlays for the true and predicted classes, when the CAM capability imports."""
    try:
        from ..lens.cam import explain
    except Exception:  # the CAM capability is optional
        return None
    try:
        out = []
        for i in range(len(true)):  # at most --top images; targets differ per image
            ex = explain(model, images[i:i + 1].float().to(model.device), method="gradcam",
                         target=[int(true[i]), int(pred[i])])
            out.append([ex.overlay(0, 0), ex.overlay(0, 1)])
        return out
    except Exception:
        return None


def evaluate(run: Any, *, top_n: int = 9, cams: bool = True, device: str = "cpu", data: Any = None,
             batch_size: int = 256) -> Evaluation:
    """Evaluate a run (a :class:`~convlens.train.run.Run` or its directory) on its test split."""
    from .run import Run

    if not isinstance(run, Run):
        run = Run.load(run, device=device)
    if data is not None:
        from ..data.sources import load_source
        from ..data.splits import Split

        ds = load_source(data)
        split = Split.from_ids(run.splits, ds)
    else:
        ds, split = load_run_data(run)
    if len(split.test) == 0:
        raise RunError(f"{run.path}: the run has an empty test split")
    model = run.model.to(device)
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
    order = torch.argsort(losses, descending=True)[: max(0, top_n)]
    top = [{"id": ids[i], "true": run.class_names[int(y[i])], "predicted": run.class_names[int(pred[i])],
            "loss": float(losses[i]), "p_predicted": float(probs[i, pred[i]]), "p_true": float(probs[i, y[i]])}
           for i in order.tolist()]
    top_images = x[order].clone() if len(order) else None
    top_cams = None
    if cams and len(order):
        top_cams = _cams(model, x[order], [int(y[i]) for i in order], [int(pred[i]) for i in order])
    return Evaluation(metrics, run.class_names, y, logits, ids, top, top_images, top_cams,
                      str(run.path) if run.path else None)
