"""``convlens report``: one self-contained HTML file (images embedded, no network requests)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, check_out_dir, emit_json, list_inputs, load, out_console


@app.command()
def report(
    images: Optional[List[str]] = typer.Argument(None, help="Image files or directories to explain."),
    run: Optional[List[str]] = typer.Option(None, "--run", help="A training run directory to report on instead; "
                                            "give --run twice or more to compare runs of the same data side by side."),
    demo: bool = typer.Option(False, "--demo", help="The built-in tour (same as `convlens demo`)."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Directory for index.html."),
    model: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    method: str = typer.Option("gradcam", "--method", help="CAM methods for images, comma-separated (gradcam, "
                               "eigencam, scorecam...)."),
    layer: Optional[str] = typer.Option(None, "--layer", "-l", help="CAM layer (default: found automatically)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Predictions shown per image."),
    top_n: int = typer.Option(9, "--top-n", help="Top losses shown for a run (compared runs: the shared hardest "
                                                     "test images, at most 8)."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A self-contained HTML report: images explained (predictions + CAMs), a run (curves,
    confusion, top losses) or the demo tour.  Writes OUT/index.html."""
    import time

    from ..errors import SpecError
    from ..report import compare_report, demo_report, explained_report, run_report

    chosen = sum([bool(images), bool(run), demo])
    if chosen != 1:
        raise SpecError("report: give IMAGE... to explain, or --run RUN_DIR (twice or more to compare), "
                        "or --demo (exactly one)")
    if top_k < 1 or top_n < 0:
        raise SpecError("--top-k must be at least 1 and --top-n at least 0", param="top_k" if top_k < 1 else "top_n")
    from .cmd_explain import staged_out

    check_out_dir(out)
    con = out_console(as_json)
    skipped: list[dict[str, str]] = []
    t0 = time.perf_counter()
    # one transaction: index.html appears at the end, or nothing when interrupted (exit 130, one line)
    with staged_out(out), con.status("working…") as status:
        say = lambda msg: status.update(f"{msg}…")  # noqa: E731
        if run:
            from ..errors import RunError

            for r in run:
                if not (Path(r) / "config.json").is_file():
                    raise RunError(f"--run {r}: not a run directory (no config.json)")
            if len(set(map(str, run))) != len(run):
                raise SpecError(f"--run {next(r for r in run if run.count(r) > 1)}: given twice", param="run")
            if len(run) > 1:
                path = compare_report(run, out, top_n=min(top_n, 8), device=device, progress=say)
                kind, what = "compare", list(run)
            else:
                path, kind, what = run_report(run[0], out, top_n=top_n, device=device, progress=say), "run", run[0]
        elif demo:
            lm = load(model, weights, device)
            path, kind, what = demo_report(out, lm, progress=say), "demo", lm.name
        else:
            from ..lens.cam import parse_methods

            methods = parse_methods(method)
            paths, skipped = list_inputs(images)
            lm = load(model, weights, device)
            path = explained_report(paths, out, lm, methods=methods, layer=layer,
                                        top_k=top_k, progress=say)
            kind, what = "images", paths
    seconds = time.perf_counter() - t0
    if as_json:
        emit_json({"report": str(path.resolve()), "kind": kind, "source": what, "seconds": round(seconds, 2),
                   "bytes": path.stat().st_size,
                   **({"skipped": skipped} if skipped else {})})
    else:
        con.print(f"[green]wrote[/] {path.resolve()}  ({path.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s)")
