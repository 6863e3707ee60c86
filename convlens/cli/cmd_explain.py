"""``convlens explain IMAGE...``: heatmaps and overlays for a target class and layer."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, emit_json, load, out_console


@app.command()
def explain(
    images: List[str] = typer.Argument(..., help="Image files or directories (walked for images)."),
    model: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    method: str = typer.Option("gradcam", "--method", help="Comma-separated: gradcam, gradcam++, xgradcam, hirescam, "
                               "layercam, eigengradcam, eigencam, scorecam, ablationcam, saliency, smoothgrad, ig, occlusion."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Class index, label (\"tabby cat\") or topK; "
                                               "repeat for several. Default: the predicted class."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", "-l", help="Module path (see `convlens layers`); "
                                              "repeat or comma-separate for several. Default: found automatically."),
    channels: Optional[str] = typer.Option(None, "--channels", help="Score-CAM/Ablation-CAM: top-k channels or 'all'."),
    cmap: str = typer.Option("jet", "--cmap", help="Colour map: jet, turbo, inferno, viridis..."),
    alpha: float = typer.Option(0.5, "--alpha", help="Heatmap opacity in the overlays (0-1)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write .npy heatmaps, overlay PNGs and grid PNGs here."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Where the network looks: CAM heatmaps and pixel attributions, written under --out."""
    from ..errors import SpecError
    from ..images import list_images
    from ..lens.cam import Explanations, _stems, check_layers, explain as run_explain, parse_methods
    from ..render.overlay import _lut

    console = out_console(as_json)
    methods = parse_methods(method)
    _lut(cmap)  # unknown colour map: fail before any work
    if not 0.0 <= alpha <= 1.0:
        raise SpecError(f"--alpha must be between 0 and 1 (got {alpha})")
    if batch_size < 1:
        raise SpecError(f"--batch-size must be at least 1 (got {batch_size})")
    paths = list_images(images)
    lm = load(model, weights, device)
    layers = None
    if layer:
        layers = [n.strip() for item in layer for n in item.split(",") if n.strip()]
        check_layers(lm, layers)
    targets = list(target) if target else None
    stems = _stems([str(p) for p in paths])

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    records: list[dict] = []
    with Progress(TextColumn("explain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=len(paths) <= batch_size) as progress:
        task = progress.add_task("explain", total=len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            res = run_explain(lm, [str(p) for p in chunk], method=methods, target=targets, layer=layers,
                              channels=channels, batch_size=batch_size)
            exs = res if isinstance(res, Explanations) else Explanations({res.method: res})
            if out is not None:
                records.extend(exs.save(out, cmap=cmap, alpha=alpha, stems=stems[start:start + len(chunk)]))
            else:
                for i in range(len(chunk)):
                    for e in exs.values():
                        for t in range(e.heatmaps.shape[1]):
                            records.append({"image": e.images[i], "method": e.method, "layer": e.layer,
                                            "target": e.targets[i][t].to_dict(), "heatmap": None,
                                            "overlay": None, "peak": list(e.peak(i, t))})
            progress.advance(task, len(chunk))

    if as_json:
        emit_json(records)
        return
    from rich.table import Table

    table = Table(title=f"explain ({lm.name})")
    for col in ("image", "method", "layer", "target", "probability", "peak (x, y)"):
        table.add_column(col)
    for r in records:
        t = r["target"]
        table.add_row(Path(r["image"]).name, r["method"], r["layer"], f"{t['index']} {t['label']}",
                      f"{t['probability']:.1%}", f"{r['peak'][0]}, {r['peak'][1]}")
    console.print(table)
    if out is not None:
        console.print(f"wrote {len(records)} heatmaps (.npy) and overlays (.png), and grid.png per image, under {out}")
