"""``convlens compare RUN RUN...``: runs of the same data side by side."""

from __future__ import annotations

from typing import List, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, check_out_dir, emit_json, out_console

#: (header, how a row's value prints) of each column, in the order shown
COLUMNS = [
    ("run", lambda r: str(r["run"])), ("arch", lambda r: str(r["arch"])), ("input", lambda r: str(r["input_size"])),
    ("params", lambda r: f"{r['params']:,}"), ("trainable", lambda r: f"{r['trainable']:,}"),
    ("accuracy", lambda r: f"{r['accuracy']:.4f}"), ("balanced", lambda r: f"{r['balanced_accuracy']:.4f}"),
    ("macro F1", lambda r: f"{r['macro_f1']:.4f}"), ("epochs", lambda r: str(r["epochs"])),
    ("time", lambda r: "" if r["seconds"] is None else f"{r['seconds']:.1f}s"),
]


def compare_table(rows: list[dict], title: str, width: int):
    """The comparison as a rich Table that fits ``width`` columns without cutting a value: one run
    per row when that fits, else one run per column (metrics down the side), long names wrapped."""
    from rich.table import Table

    cells = [[fmt(r) for _, fmt in COLUMNS] for r in rows]
    # a table's width: each column's widest cell + 3 (borders and padding)
    wide = sum(max(len(h), *(len(c[i]) for c in cells)) + 3 for i, (h, _) in enumerate(COLUMNS)) + 1
    if wide <= width:
        t = Table(*(h for h, _ in COLUMNS), title=title)
        for c in cells:
            t.add_row(*c)
        return t
    t = Table("", *(c[0] for c in cells), title=title, show_lines=False)
    t.columns[0].style, t.columns[0].no_wrap = "bold", True
    for col in t.columns[1:]:
        col.overflow = "fold"
    for i, (h, _) in enumerate(COLUMNS[1:], 1):
        t.add_row(h, *(c[i] for c in cells))
    return t


@app.command("compare")
def compare_cmd(
    runs: List[str] = typer.Argument(..., help="Two or more run directories trained on the same data."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write comparison.png, curves.png, confusion.png, "
                                      "shared.png, comparison.json and comparison.csv here."),
    top_n: int = typer.Option(6, "--top", help="How many shared test images (the hardest for all runs) to show "
                              "per run."),
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
    t = compare_table(cmp.table(), f"compare ({cmp.data_text()})", con.width)
    con.print(t)
    if saved is not None:
        con.print(f"wrote {', '.join(str(p) for p in saved.paths())}", highlight=False)
    else:
        con.print("add --out DIR for comparison.png (curves, confusion matrices, the same images per run)",
                  highlight=False)
