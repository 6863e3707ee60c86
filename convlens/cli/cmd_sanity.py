"""``convlens sanity IMAGE...``: do the heatmaps change when the model is randomised? (Adebayo et al. 2018)"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, check_out_dir, emit_json, load, out_console


@app.command()
def sanity(
    images: List[str] = typer.Argument(..., help="Image files or directories (walked for images)."),
    out: Path = typer.Option(..., "--out", "-o", help="Write sanity.json, sanity.csv, sanity.png and maps here."),
    model: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    method: str = typer.Option("gradcam,gradcam++", "--method", help="Comma-separated explanation methods; "
                               "the edge control is always added."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Class index, label or topK."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", "-l", help="CAM layer (default: found automatically)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the re-initialisation."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Cascading randomisation from the output down: Spearman and SSIM of each map with the original's."""
    from ..images import list_images
    from ..lens.cam import parse_methods
    from ..lens.sanity import CONTROLS
    from ..lens.sanity import sanity as run_sanity
    from ..names import split_names

    console = out_console(as_json)
    check_out_dir(out)
    parse_methods([m for m in split_names(method) if m.lower() not in CONTROLS] or "gradcam")
    paths = [str(p) for p in list_images(images)]
    lm = load(model, weights, device)
    with console.status("randomising the model stage by stage"):
        res = run_sanity(lm, paths, method=method, target=list(target) if target else None, layer=layer or None,
                         seed=seed)
    saved = res.save(out)
    rows = res.rows()
    if as_json:
        emit_json([{k: r[k] for k in ("method", "stage", "spearman", "ssim")} for r in rows])
        return
    from rich.table import Table

    table = Table(title=f"sanity ({lm.name}): Spearman / SSIM with the original maps")
    table.add_column("stage")
    table.add_column("randomised down to")
    for m in res.methods:
        table.add_column(m)
    for s, name in enumerate(res.stages):
        table.add_row(str(s), name, *[f"{float(res.spearman[k, s].mean()):.2f} / {float(res.ssim[k, s].mean()):.2f}"
                                      for k in range(len(res.methods))])
    console.print(table)
    console.print(f"wrote {len(saved.paths())} files under {out}")
