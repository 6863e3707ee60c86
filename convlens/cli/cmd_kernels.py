"""``convlens kernels``: hand-made convolution and pooling, with exact shapes.

A thin shell over :func:`convlens.lens.kernels.apply_kernel`: every argument is checked
there, against :class:`convlens.options.KernelOptions` and the lab's budget (a bad one is a
:class:`~convlens.errors.SpecError`, exit 2) before anything is computed or written; files go
only under ``--out``. Images up to 4096 pixels a side, kernels up to 64x64.

    convlens kernels photo.png --kernel sobel-x --pool max --out lab/
    convlens kernels demo --kernel "1,0,-1;1,0,-1;1,0,-1" --repeat 3 --json
    convlens kernels demo --kernel emboss --kernel sharpen --out lab/   # a gallery, one figure
    convlens kernels my_numbers.csv --kernel my_kernel.npy              # your numbers, as they are
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from . import app
from .common import JsonOpt, check_out_dir, emit_json, out_console

DEMO = "demo"


def image_source(image: str) -> Any:
    """The IMAGE argument: the word ``demo`` is always the built-in 9x9 vertical bar (even
    where a ``demo/`` folder or file exists, e.g. after ``make demo``: write ``./demo`` for a
    file of that name); anything else is a file."""
    if image == DEMO:
        from ..lens.kernels import demo_image

        return demo_image()
    return image


def _shapes_table(result: Any) -> Table:
    h, w = result.shapes[0]
    kh, kw = result.kernel.shape
    table = Table(title=f"kernel {result.kernel_name} ({kh}x{kw}): "
                        f"{' → '.join(f'{a}x{b}' for a, b in result.shapes)}")
    table.add_column("stage")
    table.add_column("shape", justify="right")
    table.add_column("arithmetic")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_row("input", f"{h}x{w}", f"{result.input.shape[0]} channel(s), {result.settings.color}",
                  f"{float(result.input.min()):.3g}", f"{float(result.input.max()):.3g}")
    for stage in result.stages:
        stats = stage.stats()
        table.add_row(stage.label, f"{stage.shape[0]}x{stage.shape[1]}", stage.arithmetic,
                      f"{stats['min']:.3g}", f"{stats['max']:.3g}")
    return table


@app.command("kernels")
def kernels_command(
    image: str = typer.Argument(..., help="Image file (pixels, read as 0..1), a .npy or .csv matrix of numbers "
                                "(convolved as they are), or 'demo' for a 9x9 vertical white bar (a file named demo: "
                                "./demo)."),
    kernel: List[str] = typer.Option(..., "--kernel", "-k", help="A name (vertical-edge, horizontal-edge, sobel-x, "
                                     "sobel-y, laplacian, outline, sharpen, box-blur, gaussian-blur, emboss, "
                                     "identity), a matrix such as \"1,0,-1;1,0,-1;1,0,-1\", or a .npy/.csv file. "
                                     "Repeat it for a gallery of kernels in one figure."),
    color: str = typer.Option("gray", "--color", help="gray (one channel) or rgb (the kernel on each channel)."),
    stride: int = typer.Option(1, "--stride", help="Convolution stride (1-4096)."),
    padding: str = typer.Option("valid", "--padding", help="valid, same (output ceil(n/stride)) or a number of zero "
                                "pixels (0-1024)."),
    repeat: int = typer.Option(1, "--repeat", help="Apply the kernel this many times in a row (1-16)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="max or avg pooling after the convolutions."),
    pool_size: int = typer.Option(2, "--pool-size", help="Pooling window size."),
    pool_stride: Optional[int] = typer.Option(None, "--pool-stride", help="Pooling stride (default: the pool size)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for kernels.png and the stage arrays "
                                       "(.npy); nothing is written without it."),
    as_json: bool = JsonOpt,
) -> None:
    """Convolve an image or your own numbers with classic or hand-written kernels, pool, and show every shape."""
    from ..lens.kernels import apply_kernels
    from .cmd_explain import staged_out

    if out is not None:
        check_out_dir(str(out))  # before any work
    with staged_out(out):  # the figure and every array appear together, or none when interrupted
        result = apply_kernels(image_source(image), list(kernel), color=color, stride=stride,
                               padding=padding, repeat=repeat, pool=pool, pool_size=pool_size,
                               pool_stride=pool_stride)
        saved = result.save(out) if out is not None else None
    many = hasattr(result, "results")  # several kernels: a KernelGallery
    files: dict[str, Any] = {}
    if saved is not None:
        files = {"figure": str(saved.first("figure")),
                 "kernel": [str(p) for p in saved.files["kernel"]] if many else str(saved.first("kernel")),
                 **{rec["key"]: rec["file"] for rec in saved.records}}
    if as_json:
        emit_json({**result.to_dict(), "files": files})
        return
    console = out_console(as_json)
    for r in (result.results if many else [result]):
        console.print(_shapes_table(r))
    if saved is not None:
        n = sum(1 for p in saved.paths() if p.suffix == ".npy")
        console.print(f"wrote {files['figure']} and {n} .npy file(s) in {out}")
