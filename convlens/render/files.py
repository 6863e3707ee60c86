"""Writing results: PNG bytes and atomic files (a temporary name, then a rename: nothing half-written)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    """A PIL image encoded as PNG (what ``_repr_png_`` returns)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
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
