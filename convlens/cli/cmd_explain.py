"""``convlens explain IMAGE...``: heatmaps and overlays for a target class and layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..methods import help_line
from . import app
from .common import (
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    WeightsOpt,
    check_out_dir,
    emit_json,
    err_console,
    list_inputs,
    load,
    out_console,
)

METHOD_NAMES = help_line()  # from the method registry: one declaration per method


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _say(line: str) -> None:
    err_console.print(line, highlight=False, markup=False, soft_wrap=True)


@contextmanager
def staged_out(out: "str | Path | None") -> Iterator[Any]:
    """The body of a command that writes under ``--out``, as one transaction
    (:class:`convlens.render.files.OutDir`): every file it writes there appears at the end, or
    none when it is interrupted or fails; a folder that held earlier outputs keeps them as they
    were.  Ctrl-C and SIGTERM end it with one line saying what was left, and exit code 130.
    Yields the ``OutDir`` (``None`` without ``--out``: then only the interruption is handled)."""
    import signal
    import threading

    from ..render.files import OutDir

    if out is None:
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends it as Ctrl-C does
        try:
            yield None
        except KeyboardInterrupt:
            _say("convlens: interrupted")
            raise typer.Exit(130) from None
        finally:
            if previous is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, previous)
        return
    existed = Path(out).is_dir()
    tx = OutDir(out, param="out")
    try:
        with tx:  # SIGTERM raises KeyboardInterrupt while it is open
            yield tx
    except KeyboardInterrupt:
        if tx.committed:  # the signal came during the final moves, which it waited for
            left = f"{out} was written in full just before"
        elif existed:
            left = f"{out} is as it was, nothing of this call in it"
        else:
            left = f"nothing was written to {out}"
        _say(f"convlens: interrupted; {left}")
        raise typer.Exit(130) from None


@app.command()
def explain(
    images: List[str] = typer.Argument(..., help="Image files or directories (walked for images)."),
    model: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    method: str = typer.Option("gradcam", "--method", help="Comma-separated: " + METHOD_NAMES + "."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t",
                                               help="Class index, label (\"tabby cat\") or topK; "
                                               "or another score: \"softmax:tabby cat\" (probability), \"sigmoid\" "
                                               "(\"sigmoid:0\": negative; one-logit models), \"tabby cat vs bull "
                                               "mastiff\" (logit difference), \"raw\" (sum of the outputs), "
                                               "\"seg:cat\" (segmentation: the class over its predicted pixels), "
                                               "\"similar:ref.jpg\" (cosine to that image's embedding). Repeat for "
                                               "several. Default: the predicted class."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", "-l", help="Module path (see `convlens layers`); "
                                              "repeat or comma-separate for several. Default: found automatically."),
    channels: Optional[str] = typer.Option(None, "--channels", help="Score-CAM/Ablation-CAM: top-k channels or 'all'."),
    eigen_smooth: bool = typer.Option(False, "--eigen-smooth", help="CAMs: the (oriented) first principal component of "
                                      "the weighted channels instead of their sum."),
    aug_smooth: bool = typer.Option(False, "--aug-smooth", help="Average every map over 6 copies (mirrored or not, "
                                    "x 0.9/1/1.1): smoother, 6x the time."),
    cmap: str = typer.Option("jet", "--cmap", help="Colour map: jet, turbo, inferno, viridis..."),
    alpha: float = typer.Option(0.5, "--alpha", help="Heatmap opacity in the overlays (0-1)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write .npy heatmaps, overlay PNGs and grid PNGs "
                                       "here."),
    raw: bool = typer.Option(False, "--raw", help="Also save each CAM's raw grid (e.g. 7x7, before upsampling) "
                             "as crisp pixels beside the overlays (<method>_<class>_raw.png) and in grid.png. "
                             "Needs --out."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Where the network looks: CAM heatmaps and pixel attributions, written under --out.

    Unreadable files in a directory are skipped and named on stderr (--json: {"image", "skipped"}
    rows after the records)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..lens.cam import explain as run_explain
    from ..lens.cam import parse_methods
    from ..options import ExplainOptions, check_options
    from ..render.colors import check_cmap

    console = out_console(as_json)
    check_out_dir(out)
    if raw and out is None:
        from ..errors import SpecError

        raise SpecError("--raw saves the raw CAM grids as pictures: give --out DIR too", param="raw")
    methods = parse_methods(method)  # cheap checks first, before the model loads
    check_cmap(cmap)
    check_options(ExplainOptions, alpha=alpha, batch_size=batch_size)  # alpha in [0, 1], finite; batch bounded
    paths, skipped = list_inputs(images)
    with staged_out(out):
        lm = load(model, weights, device)
        several = len(paths) > batch_size
        plain = several and not console.is_terminal  # a log or a pipe: one line per batch instead of a bar

        def tick(done: int, total: int) -> None:
            if plain:
                _say(f"explain {done}/{total} images")
            progress.update(task, completed=done)

        with Progress(TextColumn("explain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True, disable=not several or plain) as progress:
            task = progress.add_task("explain", total=len(paths))
            ex = run_explain(lm, paths, method=methods, target=list(target) if target else None,
                             layer=layer or None, channels=channels, batch_size=batch_size, progress=tick,
                             eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
        records = ex.save(out, cmap=cmap, alpha=alpha, raw=raw).records if out is not None else ex.records()

    if as_json:
        emit_json(records + skipped)
        return
    from rich.table import Table

    table = Table(title=f"explain ({lm.name})")
    for col in ("image", "method", "layer", "target", "probability", "peak (x, y)"):
        table.add_column(col)
    for r in records:
        t = r["target"]
        table.add_row(Path(r["image"]).name, r["method"], r["layer"], f"{t['index']} {t['label']}",
                      "-" if t["probability"] != t["probability"] else f"{t['probability']:.1%}",
                      f"{r['peak'][0]}, {r['peak'][1]}")
    console.print(table)
    empty = [r for r in records if r.get("empty")]
    for r in empty:
        console.print(f"{Path(r['image']).name}, {r['method']}, class {r['target']['index']} {r['target']['label']}: "
                      "no positive evidence for this class (the map is 0 everywhere; drawn grey with a note)",
                      highlight=False, markup=False)
    if out is not None:
        raws = sum(1 for r in records if r.get("raw"))
        console.print(f"wrote {len(records)} heatmaps (.npy) and overlays (.png), and grid.png per image, under {out}"
                      + (f"; {raws} raw grids (_raw.png)" if raws else ""))
        if raw and raws < len(records):
            console.print(f"{len(records) - raws} maps have no raw grid (pixel attributions, or several layers)",
                          highlight=False, markup=False)
