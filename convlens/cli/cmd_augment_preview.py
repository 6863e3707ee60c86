"""``convlens augment-preview IMAGE --augment SPEC --grid 5x5 --out DIR``: a grid of augmented copies."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from .common import JsonOpt, check_out_dir, emit_json, err_console, out_console


def parse_grid(text: str) -> tuple[int, int]:
    """``5x5`` (rows x columns) or ``5`` (square) as (rows, columns)."""
    from ..errors import SpecError

    parts = text.lower().replace("×", "x").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or not all(1 <= v <= 20 for v in nums):
        raise SpecError(f"grid {text!r}: ROWSxCOLUMNS, each 1-20, e.g. 5x5", param="grid")
    return nums[0], nums[1]


@app.command("augment-preview")
def augment_preview_cmd(
    image: str = typer.Argument(..., help="One image file."),
    augment: str = typer.Option(..., "--augment", help="e.g. rotate=15,translate=0.1,zoom=0.1,flip=h; rotate in "
                                "degrees, or rotate=0.2turn for Keras' RandomRotation(0.2) (a fraction of a turn)."),
    out: str = typer.Option(..., "--out", "-o", help="Folder for augment_preview.png."),
    grid: str = typer.Option("3x3", "--grid", help="ROWSxCOLUMNS of copies, the original top left, e.g. 5x5."),
    labels: bool = typer.Option(True, "--labels/--no-labels", help="Write what was drawn above each copy."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JsonOpt,
) -> None:
    """Write a grid of augmented copies of one image: the original top left, each copy labelled with
    its rotation (degrees), shift (pixels), zoom, flips, brightness and contrast."""
    import warnings

    from ..data.augment import AugmentWarning, parse_augment
    from ..images import load_image
    from ..render.files import save_png

    rows_cols = parse_grid(grid)
    check_out_dir(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AugmentWarning)
        aug = parse_augment(augment)
    for w in caught:
        err_console.print(f"warning: {w.message}", highlight=False, markup=False, soft_wrap=True)
    img = load_image(image, mode=None)
    path = save_png(aug.preview(img, seed=seed, grid=rows_cols, labels=labels), Path(out) / "augment_preview.png")
    if as_json:
        emit_json({"image": image, "augment": aug.spec, "grid": list(rows_cols), "preview": str(path),
                   "warnings": [str(w.message) for w in caught]})
    else:
        out_console(False).print(f"wrote {path} ({aug.spec or 'no augmentation'}, {rows_cols[0]}x{rows_cols[1]})",
                                 highlight=False)
