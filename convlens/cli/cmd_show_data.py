"""``convlens show-data DATA``: the data as a labelled gallery (the course's "all 624 faces in a grid")."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from .common import JsonOpt, check_out_dir, emit_json, out_console


@app.command("show-data")
def show_data_cmd(
    data: str = typer.Argument(..., help="folder:PATH, cmu-faces:PATH, mnist:PATH, fashion-mnist:PATH or digits; "
                               "DATA@23 (or @0-9, @3,7) shows those images only."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write gallery.png and data.json here."),
    label: Optional[str] = typer.Option(None, "--label", help="cmu-faces label: identity, eyes, pose or expression."),
    scale: Optional[int] = typer.Option(None, "--scale", help="cmu-faces scale: 1 (128x120), 2 (64x60) or 4 (32x30)."),
    size: Optional[str] = typer.Option(None, "--size", help="Show copies resized to WxH (width x height), as "
                                       "`train --size` trains on."),
    limit: int = typer.Option(640, "--limit", help="Show every image up to this many, else a seeded sample per class."),
    cols: Optional[int] = typer.Option(None, "--cols", help="Thumbnails per row (a class wraps onto more rows)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample when there are more images than --limit."),
    as_json: bool = JsonOpt,
) -> None:
    """What a data source holds: classes and counts, image size, the given split, and a gallery of its images."""
    from ..data import load_source, resize_set
    from ..data.sources import pick_images

    check_out_dir(out)
    con = out_console(as_json)
    opts = {"label": label, "scale": scale if data.startswith("cmu-faces") else None}
    picked = pick_images(data, **opts)
    ds = resize_set(picked if picked is not None else load_source(data, **opts), size)
    ds.gallery_items(limit, seed)  # checks limit before any drawing
    saved = ds.save(out, limit=limit, cols=cols, seed=seed) if out is not None else None
    if as_json:
        emit_json({**ds.to_dict(), **({"saved": saved.to_dict()} if saved is not None else {})})
        return
    from rich.table import Table

    con.print(ds.describe(), highlight=False, markup=False, soft_wrap=True)
    doc = ds.to_dict()
    t = Table("class", "images", *(["train", "test"] if ds.given_split is not None else []))
    for k, (name, n) in enumerate(doc["counts"].items()):
        extra = []
        if ds.given_split is not None:
            mask = ds.labels == k
            tests = sum(1 for i in mask.nonzero().flatten().tolist() if ds.given_split[i] == "test")
            extra = [str(n - tests), str(tests)]
        t.add_row(name, str(n), *extra)
    con.print(t)
    if saved is not None:
        con.print(f"wrote {', '.join(str(p) for p in saved.paths())}", highlight=False)
    else:
        con.print("add --out DIR for gallery.png", highlight=False)
