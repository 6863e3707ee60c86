"""``convlens demo``: the built-in tour, an offline self-contained HTML page."""

from __future__ import annotations

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, check_out_dir, emit_json, err_console, out_console


@app.command()
def demo(
    out: str = typer.Option("demo", "--out", "-o", help="Directory for index.html."),
    model: str = ModelOpt,
    device: str = DeviceOpt,
    quick: bool = typer.Option(False, "--quick", help="Every section with the least work that draws it "
                               "(fewer photos, steps and epochs): a tour in seconds, for a first look or CI."),
    as_json: bool = JsonOpt,
) -> None:
    """The tour: kernels lab, learned filters beside the classic kernels, predictions, the journey
    of a photo, CAMs, how faithful they are, activation maximization, a small CNN trained on digits
    and the layer table, in one HTML page.  One line per section on stderr, with its time."""
    import time

    from ..models import load_model
    from ..report import DEMO_SECTIONS, TourSettings, demo_report
    from .cmd_explain import staged_out

    check_out_dir(out)
    con = out_console(as_json)
    total = len(DEMO_SECTIONS)
    order = list(DEMO_SECTIONS)
    timings: dict[str, float] = {}

    def line(text: str) -> None:
        err_console.print(text, highlight=False, markup=False, soft_wrap=True)

    def done(key: str, seconds: float) -> None:
        timings[key] = seconds
        line(f"demo [{order.index(key) + 1}/{total}] {DEMO_SECTIONS[key]}: {seconds:.1f} s")

    t0 = time.perf_counter()
    with staged_out(out):  # index.html appears at the end, or nothing when interrupted
        lm = load_model(model, device=device)
        line(f"demo [0/{total}] model {lm.name} loaded: {time.perf_counter() - t0:.1f} s")
        path = demo_report(out, lm, settings=TourSettings.quick() if quick else None, done=done)
    seconds = time.perf_counter() - t0
    if as_json:
        emit_json({"report": str(path.resolve()), "model": lm.name, "seconds": round(seconds, 2),
                   "quick": quick, "sections": {k: round(v, 2) for k, v in timings.items()}})
    else:
        con.print(f"[green]wrote[/] {path.resolve()}  ({path.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s)")
