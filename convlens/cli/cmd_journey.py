"""``convlens journey IMAGE...``: feature-map grids for each conv/pool stage."""

from __future__ import annotations

from typing import List, Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, check_out_dir, emit_json, list_inputs, load, out_console


@app.command()
def journey(
    images: List[str] = typer.Argument(..., help="One image, or several to compare side by side; DATA@23 takes "
                                       "image 23 of a data source (e.g. fashion-mnist:fashion/@23, digits@0-3)."),
    out: str = typer.Option(..., "--out", "-o", help="Directory for the grid PNGs."),
    model: str = ModelOpt,
    weights: str = WeightsOpt,
    layers: Optional[str] = typer.Option(None, "--layers", "-l", help="Comma-separated module paths (default: each "
                                         "conv/pool stage)."),
    channels: Optional[str] = typer.Option(None, "--channels", "-c", help="Channels to show, e.g. 0-31, 0,4,8 or all."),
    cmap: str = typer.Option("viridis", "--cmap", help="Colour map of the feature maps."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The journey of an image through the network: one grid PNG per layer, from one forward pass."""
    from ..lens.journey import journey as run_journey
    from ..render.colors import check_cmap
    from .cmd_explain import staged_out

    check_cmap(cmap)  # validate before any work
    check_out_dir(out)
    paths, skipped = data_images(images)
    with staged_out(out):  # every grid appears at the end, or none when interrupted
        lm = load(model, weights, device)
        result = run_journey(lm, paths, layers=layers, channels=channels, cmap=cmap)
        saved = result.save(out)
    if as_json:
        emit_json({**result.to_dict(), "layers": saved.records, "skipped": skipped})
        return
    con = out_console(False)
    for f in saved.records:
        shape = "x".join(map(str, f["output_shape"]))
        con.print(f"{f['layer']:<24} {shape:>14}  {len(f['channels']):>4} ch  → {f['grid']}")


def data_images(args: List[str]) -> tuple[list, list]:
    """The inputs of ``args``: files and folders as :func:`list_inputs` reads them, and each
    ``DATA@INDEX`` as the data set's images (HxW or HxWxC arrays), in the order given."""
    from ..data.sources import pick_images

    out: list = []
    skipped: list = []
    for arg in args:
        picked = pick_images(arg)
        if picked is None:
            paths, skip = list_inputs([arg])
            out += paths
            skipped += skip
            continue
        for img in picked.images:
            a = img.permute(1, 2, 0).numpy()
            out.append(a[..., 0] if a.shape[-1] == 1 else a)
    return out, skipped
