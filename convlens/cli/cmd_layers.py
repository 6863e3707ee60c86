"""``convlens layers``: the layer table, like Keras' summary()."""

from __future__ import annotations

import typer
from rich.table import Table

from . import app
from .common import DeviceOpt, JsonOpt, ModelOpt, WeightsOpt, emit_json, load, out_console


@app.command()
def layers(
    model: str = ModelOpt,
    weights: str = WeightsOpt,
    leaves: bool = typer.Option(False, "--leaves", help="Only leaf modules (no containers)."),
    keras: bool = typer.Option(False, "--keras", help="As Keras' model.summary() lists it: one row per layer, "
                               "Keras' names (conv2d, max_pooling2d, dense), shapes (None, H, W, C)."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Every module: name (usable with --layer), type, output shape at the input size, parameters.
    Shapes are (None, C, H, W), channels first as torch computes them; --keras shows (None, H, W, C)."""
    lm = load(model, weights, device)
    table = lm.layers()
    if keras:
        _keras_table(lm.name, table, as_json)
        return
    rows = [r for r in table.rows if r.is_leaf or not leaves]
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    t = Table(title=f"{lm.name}: input (None, {', '.join(map(str, table.input_shape))})", title_justify="left",
              show_edge=False, pad_edge=False)
    t.add_column("layer")
    t.add_column("type", style="cyan")
    t.add_column("output shape", justify="right")
    t.add_column("params", justify="right")
    for r in rows:
        shape = "(None, " + ", ".join(map(str, r.output_shape)) + ")" if r.output_shape else "-"
        name = ("  " * r.depth + r.name) if not leaves else r.name
        params = f"{r.params:,}" + ("" if not r.frozen else " (frozen)" if r.frozen == r.params
                                    else f" ({r.frozen:,} frozen)")
        t.add_row(name, r.type, shape, params, style=None if r.is_leaf else "bold")
    con = out_console(False)
    con.print(t)
    con.print(f"Total params: {table.total_params:,}  ·  trainable {table.trainable_params:,}  ·  "
              f"non-trainable {table.non_trainable_params:,}  ·  {len(rows)} modules")
    if table.frozen:
        con.print("Frozen: " + ", ".join(table.frozen))


def _keras_table(name: str, table, as_json: bool) -> None:
    rows = table.keras_rows()
    if as_json:
        emit_json(rows)
        return
    c, *hw = table.input_shape
    t = Table(title=f'Model: "{name}"  input (None, {", ".join(map(str, (*hw, c)))})', title_justify="left",
              show_edge=False, pad_edge=False)
    t.add_column("Layer (type)")
    t.add_column("Output Shape", justify="left")
    t.add_column("Param #", justify="right")
    t.add_column("convlens layer", style="dim")
    for r in rows:
        shape = "(None, " + ", ".join(map(str, r["output_shape"])) + ")" if r["output_shape"] else "-"
        t.add_row(f"{r['name']} ({r['type']})", shape, f"{r['params']:,}", r["layer"])
    con = out_console(False)
    con.print(t)
    con.print(f"Total params: {table.total_params:,}  ·  Trainable params: {table.trainable_params:,}  ·  "
              f"Non-trainable params: {table.non_trainable_params:,}")
