"""``convlens score IMAGE_OR_DIR...``: how faithful is each method's heatmap? A leaderboard with baselines."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, check_out_dir, emit_json, load, out_console


@app.command()
def score(
    images: List[str] = typer.Argument(..., help="Image files or directories (walked for images)."),
    model: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    method: str = typer.Option("gradcam,gradcam++", "--method", help="Comma-separated explanation methods "
                               "(as `convlens explain`); the baselines random and centre are always scored too."),
    metric: str = typer.Option("deletion,insertion", "--metric", help="Comma-separated: deletion, insertion, "
                               "avgdrop, increase, road-morf, road-lerf, road, pointing, energy (or all)."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="JSON {\"image.png\": [[x0, y0, x1, y1], ...]} or CSV "
                                         "(image,x0,y0,x1,y1[,target]) in original pixels, or a folder of mask "
                                         "images named after the images, for pointing/energy."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Class index, label or topK; repeat for "
                                               "several. Default: the predicted class."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", "-l", help="CAM layer (default: found automatically)."),
    steps: int = typer.Option(20, "--steps", help="Deletion/insertion intervals (1-1000; 1 compares the whole image "
                              "with the baseline only)."),
    tolerance: float = typer.Option(0.0, "--tolerance", help="Pointing game: slack in original pixels."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Perturbed inputs per forward "
                                             "(default: 32)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random baseline, ROAD's noise and the bootstrap."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write summary.json, scores.png and CSVs here."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Score heatmaps: deletion/insertion, Average Drop, ROAD, pointing game; methods vs random and centre maps."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..images import list_images
    from ..lens.score import HIGHER_BETTER, check_settings, load_boxes
    from ..lens.score import score as run_score

    console = out_console(as_json)
    check_out_dir(out)
    # cheap checks before the model loads
    metrics = check_settings(metric, steps, tolerance, 1 if batch_size is None else batch_size)
    table_boxes = load_boxes(str(boxes)) if boxes is not None else None
    paths = [str(p) for p in list_images(images)]
    lm = load(model, weights, device)
    with Progress(TextColumn("score"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("score", total=None)
        res = run_score(lm, paths, method=method, metric=metrics, target=list(target) if target else None,
                        layer=layer or None, boxes=table_boxes, steps=steps, tolerance=tolerance,
                        batch_size=batch_size, seed=seed,
                        progress=lambda done, total: progress.update(task, completed=done, total=total))
    saved = res.save(out) if out is not None else None
    summary = res.summary()
    if as_json:
        emit_json({"summary": summary, "images": res.rows()})
        return
    from rich.table import Table

    by = {(r["method"], r["metric"]): r for r in summary}
    table = Table(title=f"score ({lm.name}, {len(paths)} images; best first by {metrics[0]})")
    table.add_column("method")
    for m in metrics:
        table.add_column(f"{m} ({'higher' if m in HIGHER_BETTER else 'lower'} is better)")
    for name in res.ranking():
        table.add_row(name, *[f"{by[(name, m)]['mean']:.3f} [{by[(name, m)]['low']:.3f}, {by[(name, m)]['high']:.3f}]"
                              for m in metrics])
    console.print(table)
    if saved is not None:
        console.print(f"wrote {len(saved.paths())} files (summary.json, scores.png, per-image CSVs) under {out}")
