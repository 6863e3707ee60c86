"""``convlens visualize``: activation maximization, filter grids and dataset examples."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, check_out_dir, emit_json, err_console, load, out_console


@app.command()
def visualize(
    out: str = typer.Option(..., "--out", "-o", help="Directory for the PNGs and featurevis.json."),
    model: str = ModelOpt,
    weights: str = WeightsOpt,
    layer: Optional[str] = typer.Option(None, "--layer", "-l", help="Module path from `convlens layers` (default: the "
                                        "last conv layer; with --filters the first)."),
    channels: Optional[str] = typer.Option(None, "--channels", "-c", help="Channels, e.g. 0-7 or 0,4,9 (default: the "
                                           "first 8)."),
    objective: str = typer.Option("channel", "--objective", help="channel (mean of its map), neuron (one position) or "
                                  "class (a logit)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Class indices or labels for --objective class, e.g. "
                                          "1,207 or goldfish."),
    negative: bool = typer.Option(False, "--negative", help="Minimize the objective instead."),
    neuron: Optional[str] = typer.Option(None, "--neuron", help="Position Y,X on the layer's map for --objective "
                                         "neuron (default: the centre)."),
    param: str = typer.Option("fft", "--param", help="fft (decorrelated Fourier + colour decorrelation) or pixel."),
    steps: int = typer.Option(256, "--steps", help="Optimization steps."),
    lr: float = typer.Option(0.05, "--lr", help="Adam learning rate."),
    size: Optional[str] = typer.Option(None, "--size", help="Resolution optimized, e.g. 224 or 64x60 (WxH, width x "
                                       "height; default: the model's); the PNG is at the model's input size."),
    no_transforms: bool = typer.Option(False, "--no-transforms", help="Turn off the robustness transforms (pad, "
                                       "jitter, scale, rotate)."),
    tv: float = typer.Option(0.0, "--tv", help="Total-variation penalty weight."),
    l2: float = typer.Option(0.0, "--l2", help="L2 penalty weight (distance from grey)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (deterministic on CPU)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Targets optimized together."),
    examples: Optional[str] = typer.Option(None, "--examples", help="Folder of real images, or a training run (its "
                                           "data): also show the top images per channel."),
    top: int = typer.Option(6, "--top", help="How many dataset examples per channel."),
    filters: bool = typer.Option(False, "--filters", help="Draw the conv layer's filter grid instead of optimizing "
                                 "images."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """What a channel, neuron or class responds to: optimized images (and real examples, or filters)."""
    from ..errors import DataError, SpecError
    from ..lens.examples import dataset_examples
    from ..lens.featurevis import check_settings
    from ..lens.featurevis import visualize as run_visualize
    from ..lens.filters import filters as filter_grid
    from ..options import VisualizeOptions, check_options
    from .cmd_explain import staged_out

    # cheap checks first, before any model is loaded: the numbers within their declared bounds
    check_out_dir(out)
    check_options(VisualizeOptions, steps=steps, lr=lr, tv=tv, l2=l2, batch_size=batch_size, seed=seed, top=top)
    if not filters:
        check_settings(objective=objective, param=param, steps=steps, lr=lr, tv=tv, l2=l2, size=size,
                       batch_size=batch_size, classes=classes)
        if examples is not None and objective == "class":
            raise SpecError("--examples needs a layer objective (channel or neuron), not --objective class")
    if examples is not None and not Path(examples).exists():
        raise DataError(f"--examples {examples!r}: no such folder or file")
    pos = None
    if neuron is not None:
        try:
            pos = tuple(int(v) for v in neuron.replace("x", ",").split(","))
            assert len(pos) == 2
        except (ValueError, AssertionError):
            raise SpecError(f"--neuron {neuron!r}: expected Y,X like 7,7") from None

    con = out_console(as_json)
    with staged_out(out):  # every PNG and featurevis.json appear together at the end, or none
        lm = load(model, weights, device)
        if filters:
            grid = filter_grid(lm, layer)
            png = grid.save(out).first("figure")
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("visualize"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=err_console, transient=True) as progress:
                task = progress.add_task("visualize", total=None)

                def tick(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                res = run_visualize(lm, layer, channels, objective=objective, classes=classes, neuron=pos,
                                    negative=negative, param=param, steps=steps, lr=lr, size=size,
                                    transforms=not no_transforms, tv=tv, l2=l2, seed=seed,
                                    batch_size=batch_size, progress=tick)
            rows = res.save(out).records
            if examples is not None:
                saved = dataset_examples(lm, res.layer, res.targets, examples, n=top).save(out)
                for row, channel in zip(rows, saved.records):
                    row["examples_image"] = channel["image"]
                    row["examples"] = channel["examples"]

    if filters:
        rows = []
        for i in grid.shown:
            d = {"layer": grid.layer, "channel": i, "image": str(png)}
            if grid.matches:
                m = grid.matches[i]
                d.update(kernel=m.kernel, similarity=m.score)
            rows.append(d)
        if as_json:
            emit_json(rows)
            return
        con.print(f"{grid.layer}: {len(grid.shown)} of {grid.shape[0]} filters "
                  f"{'x'.join(map(str, grid.shape[1:]))} → {png}")
        for m in grid.matches[:16]:
            con.print(f"  filter {m.filter:>3}: nearest kernel {m.label}")
        return
    if as_json:
        emit_json(rows)
        return
    what = "class" if res.objective == "class" else "channel"
    for row in rows:
        label = f" {row['label'].split(',')[0]}" if row.get("label") else ""
        con.print(f"{(row['layer'] or 'logits'):<16} {what} {row[what]:>4}{label}  "
                  f"activation {row['activation']:.4g}  → {row['image']}")
        if row.get("examples"):
            best = ", ".join(f"{Path(e['image']).name} ({e['activation']:.3g})" for e in row["examples"][:3])
            con.print(f"{'':<16} top real images: {best}  → {row['examples_image']}")
