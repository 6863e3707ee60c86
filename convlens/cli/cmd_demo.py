"""``convlens demo``: the built-in tour, an offline self-contained HTML page."""

from __future__ import annotations

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, check_out_dir, emit_json, out_console


@app.command()
def demo(
    out: str = typer.Option("demo", "--out", "-o", help="Directory for index.html."),
    model: str = ModelOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Kernels lab, predictions, the journey of a photo and the layer table, in one HTML page."""
    import time

    from ..models import load_model
    from ..report import demo_report

    check_out_dir(out)
    con = out_console(as_json)
    t0 = time.perf_counter()
    with con.status("loading the model…") as status:
        lm = load_model(model, device=device)
        path = demo_report(out, lm, progress=lambda msg: status.update(f"{msg}…"))
    seconds = time.perf_counter() - t0
    if as_json:
        emit_json({"report": str(path.resolve()), "model": lm.name, "seconds": round(seconds, 2)})
    else:
        con.print(f"[green]wrote[/] {path.resolve()}  ({path.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s)")
