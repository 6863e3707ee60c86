"""The audit directory: ``audit.json`` (what is audited, how, and whether it is finished),
``shards/part-NNNNN.parquet`` (one row per image, the same schema from every engine) and, once
finished, ``summary.json`` and ``index.html``.

Shard ``k`` holds the items ``[k * shard_size, (k + 1) * shard_size)``, so an interrupted audit
resumes by skipping the shards already on disk (each is written to a temporary name and renamed:
a shard is whole or absent).  ``audit.json`` says ``"state": "running"`` (with the writer's ``pid``
and ``host``) until the summary and the page are written, then ``"done"``; an audit stopped by an
exception says ``"failed"`` (with the one-line ``error``), one stopped by Ctrl-C or SIGTERM
``"interrupted"`` (see :func:`records_stop`), and one whose writer was killed outright is read back
as ``"interrupted"`` (its ``running`` names a process of this host that is gone).
:func:`read_manifest` with ``finished=True`` refuses anything but ``done``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SpecError
from ..render.files import atomic_write_bytes, atomic_write_json, text_safe
from .maps import MAP_SIZE

MANIFEST = "audit.json"
SHARDS = "shards"
FORMAT = "convlens-audit/1"


def map_type(size: int = MAP_SIZE) -> pa.DataType:
    return pa.list_(pa.float16(), size * size)


def schema(size: int = MAP_SIZE) -> pa.Schema:
    """One row per image: where it came from, what the model said, its maps and numbers.

    ``klass`` is the class the image is audited under (the true label when known, else the
    prediction); ``map`` is the heatmap of that class, ``map_pred`` the predicted class's;
    ``ok`` False rows are unreadable images (``error`` says why; the rest is null)."""
    f32, i32 = pa.float32(), pa.int32()
    return pa.schema([
        ("index", pa.int64()), ("id", pa.string()), ("ok", pa.bool_()), ("error", pa.string()),
        ("label", i32), ("klass", i32), ("pred", i32), ("prob_pred", f32), ("prob_label", f32),
        ("topk_index", pa.list_(i32)), ("topk_prob", pa.list_(f32)),
        ("width", i32), ("height", i32),
        ("map", map_type(size)), ("map_pred", map_type(size)),
        ("peak_x", f32), ("peak_y", f32), ("pred_peak_x", f32), ("pred_peak_y", f32),
        ("centre", f32), ("border", f32), ("spread", f32), ("area50", f32),
    ])


def shard_path(out: Path, k: int) -> Path:
    return out / SHARDS / f"part-{k:05d}.parquet"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def done_shards(out: Path, n_shards: int) -> set[int]:
    """The shards already written whole (a temporary leftover of a kill does not count)."""
    return {k for k in range(n_shards) if shard_path(out, k).is_file()}


def _map_column(maps: list[Any], size: int) -> pa.Array:
    """Maps (or None for unreadable rows) as one float16 fixed-size-list column."""
    flat = np.zeros((len(maps), size * size), np.float16)
    valid = np.zeros(len(maps), bool)
    for i, m in enumerate(maps):
        if m is not None:
            flat[i] = np.asarray(m, np.float32).ravel()
            valid[i] = True
    values = pa.array(flat.ravel(), type=pa.float16())
    return pa.FixedSizeListArray.from_arrays(values, size * size, mask=pa.array(~valid))


def write_shard(out: Path, k: int, rows: dict[str, list[Any]], size: int = MAP_SIZE) -> Path:
    """Write one shard's columns atomically (a temporary name, then a rename)."""
    s = schema(size)
    cols = []
    for f in s:
        v = rows[f.name]
        if pa.types.is_fixed_size_list(f.type) and pa.types.is_float16(f.type.value_type):
            cols.append(_map_column(v, size))
        elif pa.types.is_string(f.type):  # a file name's undecodable bytes as \xNN: Parquet strings are UTF-8
            cols.append(pa.array([None if x is None else text_safe(x) for x in v], type=f.type))
        else:
            cols.append(pa.array(v, type=f.type))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(cols, schema=s), buf, compression="zstd")
    return atomic_write_bytes(shard_path(out, k), buf.getvalue())


def _files(out: Path) -> list[Path]:
    return sorted((out / SHARDS).glob("part-*.parquet"))


def read_shards(out: Path, columns: Iterable[str] | None = None, filter: Any = None) -> pa.Table:
    """Every written shard as one table (optionally a few columns and a row filter), in item order.

    One file at a time (a dataset scan over all of them reads several ahead and keeps their
    buffers: 200 MiB more at 20,000 images for a few scalar columns)."""
    size = map_size(out)
    cols = None if columns is None else list(columns)
    empty = schema(size).empty_table()
    parts = [pq.read_table(str(f), columns=cols, filters=filter, schema=schema(size)) for f in _files(out)]
    t = pa.concat_tables(parts) if parts else (empty if cols is None else empty.select(cols))
    pa.default_memory_pool().release_unused()
    return t


def item_map(out: Path, index: int, shard_size: int, column: str = "map") -> np.ndarray:
    """The ``column`` map of item ``index``, read from the one shard that holds it."""
    size = map_size(out)
    path = shard_path(out, int(index) // int(shard_size))
    files = [path] if path.is_file() else _files(out)  # a directory written otherwise: look everywhere
    for f in files:
        t = pq.read_table(str(f), columns=["index", column], schema=schema(size))
        rows = np.flatnonzero(t.column("index").to_numpy(zero_copy_only=False) == int(index))
        if len(rows):
            return maps_of(t.take(pa.array(rows[:1])), column, size)[0]
    raise KeyError(index)


class ClassMaps:
    """The ``column`` maps of the readable rows audited under class ``klass``, without holding them:
    ``len``, :meth:`chunks` (one shard's rows at a time, float32) and :meth:`take` (chosen rows,
    float16 as stored), positions counted in the class's own order (the shards' order).  What the
    SpRAy passes of :mod:`convlens.audit.spray` read, so that a class of a million images costs
    one shard's maps at a time."""

    def __init__(self, out: Path, klass: int, column: str = "map"):
        self.out, self.column, self.size = out, column, map_size(out)
        self.parts: list[tuple[Path, np.ndarray]] = []  # (shard, its rows of this class)
        for f in _files(out):
            t = pq.read_table(str(f), columns=["ok", "klass"], schema=schema(self.size))
            keep = np.asarray(t.column("ok").to_numpy(zero_copy_only=False), bool) & \
                (t.column("klass").fill_null(-1).to_numpy(zero_copy_only=False) == int(klass))
            if keep.any():
                self.parts.append((f, np.flatnonzero(keep)))
        self.starts = np.cumsum([0] + [len(r) for _, r in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _read(self, f: Path, rows: np.ndarray) -> np.ndarray:
        t = pq.read_table(str(f), columns=[self.column], schema=schema(self.size))
        return maps_of(t.take(pa.array(rows)), self.column, self.size)

    def chunks(self) -> Iterable[tuple[int, np.ndarray]]:
        """``(first position, maps (k, s, s) float32)`` per shard, in order."""
        for (f, rows), start in zip(self.parts, self.starts):
            yield int(start), self._read(f, rows)
        pa.default_memory_pool().release_unused()

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The maps at the (sorted) class ``positions``, ``(len, s, s)`` float16."""
        positions = np.asarray(positions, np.int64)
        out = np.empty((len(positions), self.size, self.size), np.float16)
        shard = np.searchsorted(self.starts, positions, side="right") - 1
        for j in np.unique(shard):
            sel = np.flatnonzero(shard == j)
            f, rows = self.parts[j]
            out[sel] = self._read(f, rows[positions[sel] - self.starts[j]])
        pa.default_memory_pool().release_unused()
        return out

    def array(self) -> np.ndarray:
        """All of them, ``(N, s, s)`` float16 (for a class known to be small)."""
        return self.take(np.arange(len(self)))


def class_maps(out: Path, klass: int, column: str = "map", dtype: Any = np.float16) -> np.ndarray:
    """The ``column`` maps of the readable rows audited under class ``klass``, ``(N, s, s)``, all in
    memory (see :class:`ClassMaps` for the streaming form)."""
    return ClassMaps(out, klass, column).array().astype(dtype, copy=False)


def map_size(out: Path) -> int:
    try:
        return int(json.loads((out / MANIFEST).read_text()).get("map_size", MAP_SIZE))
    except (OSError, ValueError):
        return MAP_SIZE


def maps_of(table: pa.Table, column: str = "map", size: int = MAP_SIZE) -> np.ndarray:
    """A map column as ``(N, size, size)`` float32 (nulls as zeros)."""
    col = table.column(column).combine_chunks() if table.num_rows else None
    if col is None:
        return np.zeros((0, size, size), np.float32)
    col = col.fill_null(pa.scalar([0.0] * size * size, type=map_type(size)))
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32).reshape(-1, size, size)


def read_manifest(out: Path, *, finished: bool = False) -> dict[str, Any] | None:
    """``audit.json`` of ``out`` (None when absent); with ``finished``, a SpecError when the audit is
    not finished (an interrupted audit is never read as a result)."""
    path = out / MANIFEST
    if not path.is_file():
        if finished:
            raise SpecError(f"audit {out}: no {MANIFEST} there, so it is not an audit directory", param="audit")
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"audit {out}: {MANIFEST} cannot be read ({exc.__class__.__name__})", param="audit") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise SpecError(f"audit {out}: {MANIFEST} is not a convlens audit manifest", param="audit")
    if m.get("state") == "running" and _writer_gone(m):
        m["state"] = "interrupted"  # its writer was killed outright: never shown as running
    if finished and m.get("state") != "done":
        n = len(done_shards(out, int(m.get("shards", 0))))
        raise SpecError(f"audit {out}: unfinished ({n} of {m.get('shards')} shards written); run the same audit "
                        "again to resume it", param="audit")
    return m


def _writer_gone(m: dict[str, Any]) -> bool:
    """Whether a ``running`` manifest's writer is a process of this host that no longer exists."""
    pid = m.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or m.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's): alive
        return False
    return False


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Write ``audit.json``; a ``running`` one records this process (``pid``, ``host``) so a reader can
    tell a live audit from one whose writer was killed."""
    extra = {"pid": os.getpid(), "host": socket.gethostname()} if manifest.get("state") == "running" else {}
    clean = {k: v for k, v in manifest.items() if k not in ("pid", "host", "error")}
    return atomic_write_json(out / MANIFEST, {"format": FORMAT, **clean, **extra,
                                              **({"error": manifest["error"]} if "error" in manifest else {})})


def mark_stopped(out: Path, exc: BaseException) -> bool:
    """Turn this process's ``running`` manifest in ``out`` into ``interrupted`` (Ctrl-C, SIGTERM) or
    ``failed`` (any other exception, its one line kept as ``error``).  A full disk may refuse the new
    file: then the manifest is overwritten in place (its blocks are already there).  Whether it
    changed anything."""
    path = out / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(m, dict) or m.get("state") != "running" or m.get("pid") != os.getpid():
        return False  # another audit's manifest, or not ours to change
    m.pop("format", None)
    if isinstance(exc, (KeyboardInterrupt, SystemExit)) or type(exc).__name__ in ("Exit", "Abort"):
        m["state"] = "interrupted"
    else:
        m["state"] = "failed"
        m["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
    try:
        write_manifest(out, m)
    except Exception:  # noqa: BLE001 - e.g. no space for a new file: rewrite the old one where it lies
        data = (json.dumps({"format": FORMAT, **m}) + "\n").encode("utf-8")
        try:
            with open(path, "r+b") as f:
                f.write(data)
                f.truncate()
        except OSError:
            try:
                path.unlink()  # never leave it saying running: without it the folder is no finished audit
            except OSError:
                return False
    return True


_F = TypeVar("_F", bound=Callable[..., Any])


def records_stop(fn: _F) -> _F:
    """Decorate an audit verb taking ``out=``: when it raises, the ``running`` manifest it wrote says
    ``failed`` or ``interrupted`` instead (:func:`mark_stopped`), and the exception goes on."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            out = kwargs.get("out")
            if out is not None:
                mark_stopped(Path(out), exc)
            raise

    return wrapper  # type: ignore[return-value]


#: the manifest fields that must match for a directory to be resumed
IDENTITY = ("model", "data", "items", "fingerprint", "method", "layer", "target", "top_k", "shard_size", "map_size")


def check_out(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse an ``out`` that is a file, or holds something that is not this audit; the manifest of
    this same audit when it is there (resume), else None (a fresh start)."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"out {out}: exists and is not a directory", param="out")
    if not out.exists():
        return None
    m = read_manifest(out) if (out / MANIFEST).exists() else None
    if m is None:
        others = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if others:
            raise SpecError(f"out {out}: holds files that are not an audit ({', '.join(sorted(others)[:3])}); "
                            "choose an empty or new folder", param="out")
        return None
    diff = [k for k in IDENTITY if m.get(k) != identity.get(k)]
    if diff:
        k = diff[0]
        raise SpecError(f"out {out}: holds another audit ({k} {m.get(k)!r}, not {identity.get(k)!r}); choose "
                        "another folder or delete that one", param="out")
    return m


def remove_leftovers(out: Path) -> None:
    """Temporary files of a killed write (``.part-NNNNN.parquet.tmp``)."""
    for p in (out / SHARDS).glob(".*.tmp") if (out / SHARDS).is_dir() else ():
        try:
            os.remove(p)
        except OSError:
            pass
