"""``convlens predict IMAGE...``: top-k labels and probabilities."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, emit_json, err_console, list_inputs, load, out_console


@app.command()
def predict(
    images: List[str] = typer.Argument(..., help="Image files or directories of images."),
    model: str = ModelOpt,
    weights: str = WeightsOpt,
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes per image."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward pass (default: 8 on "
                                             "CPU, 32 on GPU)."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Top-k labels and probabilities for each image, best first.

    In a directory, files that cannot be read are skipped and named on stderr (with --json, each
    is a row {"image": PATH, "skipped": REASON} after the results); a file named explicitly that
    cannot be read is an error. A model with random weights (--no-pretrained) is named as such
    (a notice, and "weights": "random" in every JSON row): its labels mean nothing."""
    paths, skipped = list_inputs(images)
    lm = load(model, weights, device)
    results = lm.predict(paths, top_k=top_k, batch_size=batch_size)
    random = lm.source.get("weights") == "random"
    if random:
        err_console.print(f"notice: {lm.name} has random weights (not trained): its predictions are noise; "
                          "drop --no-pretrained or pass --weights FILE", highlight=False, markup=False, soft_wrap=True)
    if as_json:
        emit_json([{**r.to_dict(), **({"weights": "random"} if random else {})} for r in results] + skipped)
        return
    con = out_console(False)
    for r in results:
        title = f"{r.image}  (random weights)" if random else r.image
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("#", justify="right")
        table.add_column("class", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("", style="cyan", no_wrap=True)
        for i, p in enumerate(r.predictions, 1):
            bar = "█" * max(1, round(p.probability * 24))
            table.add_row(str(i), str(p.index), p.label, f"{p.probability:.1%}", bar)
        con.print(table)
