"""``convlens audit DATA --model M``: explain every image of a data set, class by class strategies
(SpRAy) and the shortcuts the model may have learned; Parquet shards, a summary and one HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, WeightsOpt, check_out_dir, emit_json, err_console, load, out_console


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@app.command()
def audit(
    data: str = typer.Argument(..., help="An image folder with class subfolders, run:PATH[:test|val|train|all] "
                               "(a training run's split), or one image file."),
    model: str = typer.Option(..., "--model", "-m", help="Model: a run directory, a checkpoint, effnet-lite0, "
                              "timm:NAME or torchvision:NAME."),
    weights: Optional[str] = WeightsOpt,
    method: str = typer.Option("gradcam", "--method", help="The explanation method (as `convlens explain`)."),
    layer: Optional[str] = typer.Option(None, "--layer", "-l", help="Its layer (default: found automatically)."),
    target: str = typer.Option("label", "--target", help="label: cluster the true class's heatmaps (the "
                               "predicted class's when no label is known); pred: the predicted class's."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The audit directory (Parquet shards, "
                                       "summary.json, overview.png, index.html); an unfinished audit there "
                                       "resumes. Default: a new temporary directory."),
    engine: str = typer.Option("local", "--engine", help="local (threads) or ray (Ray Data actors)."),
    address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: the cluster to join "
                                          "(e.g. auto inside `ray job submit`); default: a local Ray."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding threads (local) or model actors (ray)."),
    top_k: int = typer.Option(5, "--top-k", help="Predictions kept per image."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward (default: the model's)."),
    shard_size: int = typer.Option(512, "--shard-size", help="Images per Parquet shard (the unit of resuming)."),
    replace: str = typer.Option("mean", "--replace", help="How the interventions replace a region they test: mean "
                                "(the data's mean colour), blur (a strong Gaussian blur) or inpaint (ROAD's noisy "
                                "linear inpainting). A finished audit run again with another one redoes only them."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Audit a model over a data set: accuracy and mean heatmaps per class, its strategies (spectral
    clusters of the heatmaps), and the shortcuts it relies on: the regions the heatmaps suggest and
    the global statistics, tested by masking them against random regions (findings). Ctrl-C keeps
    the shards written so far: the same command again resumes."""
    import signal
    import threading
    import time
    import warnings

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..audit import AuditWarning
    from ..audit import audit as run_audit

    console = out_console(as_json)
    check_out_dir(out)
    lm = load(model, weights, device)
    state: dict[str, Any] = {"out": out, "t0": None, "resumed": 0}

    progress = Progress(TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                        TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task("audit", total=None, rate="")

    def on_start(manifest: dict[str, Any], resumed: int) -> None:  # every check passed: the work starts
        state["resumed"], state["t0"] = resumed, time.perf_counter()
        if resumed:
            err_console.print(f"resuming: {resumed} of {manifest['items']} images already audited",
                              highlight=False, markup=False)
        progress.update(task, completed=resumed, total=manifest["items"])
        progress.start()
        state["started"] = True

    def tick(done: int, total: int) -> None:
        fresh, dt = done - state["resumed"], time.perf_counter() - (state["t0"] or time.perf_counter())
        progress.update(task, completed=done, total=total,
                        rate=f"{fresh / dt:.1f} images/s" if dt > 0 and fresh > 0 else "")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends it as Ctrl-C does
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AuditWarning)
            try:
                res = run_audit(lm, data, method=method, layer=layer, target=target, out=out, engine=engine,
                                address=address, top_k=top_k, batch_size=batch_size, shard_size=shard_size,
                                workers=workers, replace=replace, progress=tick, on_start=on_start)
            finally:
                if state.get("started"):
                    progress.stop()
    except KeyboardInterrupt:
        where = f" under {out}" if out is not None else ""
        err_console.print(f"convlens: interrupted; the shards written so far are kept{where}: run the same "
                          "command again to resume", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)
        for w in caught:
            if issubclass(w.category, AuditWarning):
                err_console.print(f"warning: {w.message}", highlight=False, markup=False, soft_wrap=True)
    if as_json:
        emit_json(res.to_dict())
        return
    from rich.table import Table

    acc = "n/a" if res.accuracy is None else f"{res.accuracy:.1%}"
    table = Table(title=f"audit of {lm.name}: {res.images} images, accuracy {acc}, {len(res.findings)} finding(s) "
                        "proven by intervention")
    for col in ("class", "n", "accuracy", "strategies", "flagged"):
        table.add_column(col)
    for c in res.classes:
        table.add_row(c.name, str(c.n), "n/a" if c.accuracy is None else f"{c.accuracy:.1%}", str(len(c.clusters)),
                      str(sum(cl.flagged for cl in c.clusters)))
    console.print(table)
    for f in res.findings:
        console.print(f"finding, {f['class']}: {f['why']}", highlight=False, markup=False, soft_wrap=True)
    if not res.findings:
        console.print(f"no finding: {len(res.verdicts)} hypotheses tested by intervention, none beyond its control",
                      highlight=False, markup=False)
    if res.skipped:
        console.print(f"skipped {len(res.skipped)} unreadable image(s); listed in summary.json and index.html",
                      highlight=False, markup=False)
    console.print(f"wrote the audit to {res.out} (index.html, summary.json, overview.png, shards/)",
                  highlight=False, markup=False, soft_wrap=True)
