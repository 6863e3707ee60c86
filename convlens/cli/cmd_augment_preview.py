"""``convlens augment-preview IMAGE --augment SPEC --out DIR``: the 3x3 grid of augmented copies."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from .common import JsonOpt, check_out_dir, emit_json, out_console


@app.command("augment-preview")
def augment_preview_cmd(
    image: str = typer.Argument(..., help="One image file."),
    augment: str = typer.Option(..., "--augment", help="e.g. rotate=15,translate=0.1,zoom=0.1,flip=h"),
    out: str = typer.Option(..., "--out", "-o", help="Folder for augment_preview.png."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JsonOpt,
) -> None:
    """Write a 3x3 grid: the image (top left) and eight augmented copies."""
    from ..data.augment import parse_augment
    from ..images import load_image
    from ..render.files import save_png

    check_out_dir(out)
    aug = parse_augment(augment)
    img = load_image(image, mode=None)
    path = save_png(aug.preview(img, seed=seed), Path(out) / "augment_preview.png")
    if as_json:
        emit_json({"image": image, "augment": aug.spec, "preview": str(path)})
    else:
        out_console(False).print(f"wrote {path} ({aug.spec or 'no augmentation'})", highlight=False)
