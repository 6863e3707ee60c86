"""``convlens evaluate RUN``: metrics on the run's test split."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, check_out_dir, emit_json, out_console


@app.command("evaluate")
def evaluate_cmd(
    run: str = typer.Argument(..., help="A run directory written by `convlens train`."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write metrics.json, confusion.png, top_losses.png and "
                                      "the top losses' Grad-CAM maps (.npy) here."),
    top_n: int = typer.Option(9, "--top", help="How many of the worst test mistakes (top losses) to show."),
    cams: bool = typer.Option(True, "--cams/--no-cams", help="Grad-CAM for the true and predicted class in the "
                              "top-losses grid."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Accuracy, balanced accuracy, macro F1, per-class scores and the confusion matrix."""
    from ..train import evaluate

    check_out_dir(out)
    con = out_console(as_json)
    ev = evaluate(run, top_n=top_n, cams=cams and out is not None, device=device)
    saved = ev.save(out) if out is not None else None
    if as_json:
        emit_json({**ev.to_dict(), **({"saved": saved.to_dict()} if saved is not None else {})})
        return
    from rich.table import Table

    m = ev.metrics
    con.print(f"{run}: test accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
              f"macro F1 {m['macro_f1']:.4f} (n={m['n_test']})", highlight=False)
    t = Table("class", "precision", "recall", "F1", "support")
    for name, r in m["per_class"].items():
        t.add_row(name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
    con.print(t)
    if ev.top_losses:
        con.print("worst mistakes: " + "; ".join(f"{r['id']} ({r['true']} -> {r['predicted']})"
                                                  for r in ev.top_losses if r["true"] != r["predicted"])[:600]
                  or "no mistakes", highlight=False)
    if saved is not None:
        con.print(f"wrote {', '.join(str(p) for p in saved.paths())}", highlight=False)
    else:
        con.print("add --out DIR for confusion.png and the top-losses grid", highlight=False)
