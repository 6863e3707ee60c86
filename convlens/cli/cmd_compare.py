"""``convlens compare RUN RUN...``: runs of the same data side by side."""

from __future__ import annotations

from typing import List, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, check_out_dir, emit_json, out_console


@app.command("compare")
def compare_cmd(
    runs: List[str] = typer.Argument(..., help="Two or more run directories trained on the same data."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write comparison.png, curves.png, confusion.png, "
                                      "shared.png, comparison.json and comparison.csv here."),
    top_n: int = typer.Option(6, "--top", help="How many shared test images (the hardest for all runs) to show per run."),
    cams: bool = typer.Option(True, "--cams/--no-cams", help="Grad-CAM of each run's prediction on the shared images."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Curves overlaid, metrics, parameter counts and time in one table, confusion matrices side by side."""
    from ..train import compare

    check_out_dir(out)
    con = out_console(as_json)
    cmp = compare(runs, top_n=top_n, cams=cams and out is not None, device=device)
    saved = cmp.save(out) if out is not None else None
    if as_json:
        emit_json({**cmp.to_dict(), **({"saved": saved.to_dict()} if saved is not None else {})})
        return
    from rich.table import Table

    t = Table("run", "arch", "input", "params", "trainable", "accuracy", "balanced", "macro F1", "epochs", "time",
              title=f"compare ({cmp.data_text()})")
    for r in cmp.table():
        t.add_row(r["run"], r["arch"], r["input_size"], f"{r['params']:,}", f"{r['trainable']:,}",
                  f"{r['accuracy']:.4f}", f"{r['balanced_accuracy']:.4f}", f"{r['macro_f1']:.4f}", str(r["epochs"]),
                  "" if r["seconds"] is None else f"{r['seconds']:.1f}s")
    con.print(t)
    if saved is not None:
        con.print(f"wrote {', '.join(str(p) for p in saved.paths())}", highlight=False)
    else:
        con.print("add --out DIR for comparison.png (curves, confusion matrices, the same images per run)",
                  highlight=False)
