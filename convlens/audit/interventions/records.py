"""The interventions' files and inputs: the table's schema (``interventions.parquet``, the same from
both engines), the plan (``interventions.json``), the sampled images as :class:`Subject` rows and their
decoding."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ...models.lensmodel import LensModel
from ...render.files import atomic_write_bytes, atomic_write_json
from ..engine import decoder
from ..inputs import Item

PLAN = "interventions.json"
TABLE = "interventions.parquet"


def schema() -> pa.Schema:
    """One row per image and intervention: ``kind`` region / control / object (the image's object
    replaced, the second control) / global / mirror (a statistic changed the other way); ``test`` the
    candidate or statistic's number in the plan; ``position`` the control's place (-1 otherwise); the
    image's audit ``index``, audited class and label; the class whose probability is measured
    (``target``) before and after, the predictions before and after; ``value`` the image's statistic
    (global rows); ``content`` the box's pixels pooled to ``CONTENT`` x ``CONTENT`` per channel (region
    rows of the candidate's class's images, and the control's first place: the reference)."""
    i32, f32 = pa.int32(), pa.float32()
    return pa.schema([("kind", pa.string()), ("test", i32), ("position", i32), ("index", pa.int64()),
                      ("klass", i32), ("label", i32), ("target", i32), ("pred_before", i32),
                      ("prob_before", f32), ("pred_after", i32), ("prob_after", f32), ("value", f32),
                      ("content", pa.list_(f32))])


def write_table(out: Path, cols: dict[str, list[Any]]) -> Path:
    s = schema()
    table = pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in s], schema=s)
    # one order whatever engine and worker measured which rows
    table = table.sort_by([("test", "ascending"), ("kind", "ascending"), ("position", "ascending"),
                           ("index", "ascending")])
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return atomic_write_bytes(out / TABLE, buf.getvalue())


def write_plan(out: Path, the_plan: dict[str, Any]) -> Path:
    return atomic_write_json(out / PLAN, the_plan)


def concat(parts: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    return {f.name: [v for p in parts for v in p[f.name]] for f in schema()}


def read(out: Path) -> tuple[dict[str, Any] | None, pa.Table | None]:
    """The plan and the table of an audit directory (None, None when it has none)."""
    p, tp = out / PLAN, out / TABLE
    if not p.is_file() or not tp.is_file():
        return None, None
    return json.loads(p.read_text(encoding="utf-8")), pq.read_table(str(tp), schema=schema())


@dataclass
class Subject:
    """A sampled image: its item, the class it is audited under and its label (-1 unknown)."""

    item: Item
    klass: int
    label: int


def subjects(the_plan: dict[str, Any], items: Sequence[Item], klass: dict[int, int], label: dict[int, int]
             ) -> list[Subject]:
    """The plan's sampled images as :class:`Subject` rows, in the plan's order."""
    return [Subject(items[i], klass[i], label[i]) for v in the_plan["sample"].values() for i in v]


def decode(lm: LensModel, subs: Sequence[Subject], workers: int = 2
           ) -> tuple[torch.Tensor, list[int], list[int], list[int]]:
    """The subjects' input tensors (the readable ones: the audit read them all already) and their
    index, class and label lists."""
    one = decoder(lm)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        got = list(pool.map(lambda s: one(s.item), subs))
    keep = [j for j, d in enumerate(got) if d.tensor is not None]
    c, h, w = lm.config.input_size
    x = torch.stack([got[j].tensor for j in keep]) if keep else torch.zeros(0, c, h, w)
    return (x, [subs[j].item.index for j in keep], [subs[j].klass for j in keep], [subs[j].label for j in keep])


def all_tests(the_plan: dict[str, Any]) -> list[tuple[str, int]]:
    return [("region", k) for k in range(len(the_plan["candidates"]))] + \
        [("global", s) for s in range(len(the_plan["statistics"]))]
