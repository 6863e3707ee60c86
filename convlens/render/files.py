"""Writing results: PNG bytes and atomic files (a temporary name, then a rename: nothing half-written)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def png_bytes(image: Image.Image, compress_level: int | None = None) -> bytes:
    """A PIL image encoded as PNG (what ``_repr_png_`` returns); ``compress_level`` 0-9 trades size for
    speed (zlib's level; Pillow's default 6 when None; the web server answers with 3)."""
    buf = io.BytesIO()
    if compress_level is None:
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="PNG", compress_level=int(compress_level))
    return buf.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary name beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as a PNG atomically."""
    return atomic_write_bytes(path, png_bytes(image))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a NumPy array as ``.npy`` atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())


def safe_stem(text: str, fallback: str = "x") -> str:
    """A file-name-safe stem: letters, digits, ``-``, ``_`` and ``.`` kept, the rest ``_``."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_.")
    return out or fallback


def unique_stems(names: Sequence[str], fallback: str = "image") -> list[str]:
    """One safe, distinct stem per name (the file's stem; repeats get ``_2``, ``_3``...)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        base = safe_stem(Path(str(n)).stem if n else "", fallback)
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append(base if k == 0 else f"{base}_{k + 1}")
    return out


@dataclass(frozen=True)
class Saved:
    """What a ``save(out_dir)`` wrote: the directory, its files by role, and per-item records.

    ``files``: role (``"overlay"``, ``"heatmap"``, ``"grid"``, ``"json"``...) -> paths, in the
    order written.  ``records``: optional per-item descriptions (JSON-ready dicts) that name
    their files, e.g. one per image x method x target for an explanation.
    """

    dir: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, role: str) -> list[Path]:
        return self.files[role]

    def paths(self) -> list[Path]:
        """Every file written, in order."""
        return [p for ps in self.files.values() for p in ps]

    def first(self, role: str) -> Path:
        return self.files[role][0]

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "files": {r: [str(p) for p in ps] for r, ps in self.files.items()},
                "records": list(self.records)}


class OutDir:
    """Writes files under one directory, each atomically, and records them by role.

    >>> import tempfile
    >>> from PIL import Image
    >>> out = OutDir(tempfile.mkdtemp())
    >>> _ = out.png("grid", "a/grid.png", Image.new("RGB", (2, 2)))
    >>> saved = out.saved()
    >>> [p.name for p in saved["grid"]]
    ['grid.png']
    """

    def __init__(self, path: str | os.PathLike):
        self.dir = Path(path)
        self.files: dict[str, list[Path]] = {}
        self.records: list[dict[str, Any]] = []

    def _add(self, role: str, path: Path) -> Path:
        self.files.setdefault(role, []).append(path)
        return path

    def raw(self, role: str, rel: str | os.PathLike, data: bytes) -> Path:
        return self._add(role, atomic_write_bytes(self.dir / rel, data))

    def png(self, role: str, rel: str | os.PathLike, image: Image.Image) -> Path:
        return self._add(role, save_png(image, self.dir / rel))

    def text(self, role: str, rel: str | os.PathLike, text: str) -> Path:
        return self._add(role, atomic_write_text(self.dir / rel, text))

    def json(self, role: str, rel: str | os.PathLike, obj: Any) -> Path:
        return self._add(role, atomic_write_json(self.dir / rel, obj))

    def npy(self, role: str, rel: str | os.PathLike, array: np.ndarray) -> Path:
        return self._add(role, atomic_write_npy(self.dir / rel, array))

    def record(self, **fields: Any) -> None:
        self.records.append(fields)

    def saved(self) -> Saved:
        self.dir.mkdir(parents=True, exist_ok=True)
        return Saved(self.dir, {r: list(ps) for r, ps in self.files.items()}, list(self.records))
