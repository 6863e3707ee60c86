"""Encoding pictures for HTTP: PNG bytes, data URLs, heatmaps as palette PNGs.

The pictures themselves come from the results (``figure()``, ``overlay()``) and from
:mod:`convlens.render`; this module only encodes them, fast (the page asks for many).
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..render.colors import lut
from ..render.files import png_bytes as encode_png


def png_bytes(img: Image.Image) -> bytes:
    """PNG bytes, quickly: zlib level 3 (about 3x faster than the default for the same pixels;
    the page's many small tiles and heatmaps are encoded per request)."""
    return encode_png(img, compress_level=3)


def data_url(img: Image.Image) -> str:
    """``data:image/png;base64,...`` for an image (allowed by the page's CSP ``img-src data:``)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def heat_image(heat: Any, cmap: str = "jet", mask: Any | None = None) -> Image.Image:
    """A [0, 1] heatmap (array or tensor) as a colour image (same size); ``mask`` (0/1) becomes its alpha.

    A palette image: one byte a pixel, the colour map's entry as :func:`colorize` picks it,
    so it looks the same as RGB and encodes about 4x faster.  Masked pixels take an entry
    whose colour the map repeats (jet has four), made transparent; RGBA when there is none.
    NumPy on one thread (the I/O threads call this while torch's threads run a forward).
    """
    idx = np.rint(np.clip(_numpy(heat) * 255.0, 0, 255)).astype(np.uint8)
    table = lut(cmap)
    if mask is not None:
        spare = _spare_entry(cmap)
        outside = _numpy(mask) < 0.5
        if spare is None:
            alpha = np.where(outside, 0, 255).astype(np.uint8)[..., None]
            return Image.fromarray(np.concatenate([table[idx], alpha], axis=-1), "RGBA")
        twin, entry = spare
        idx[idx == entry] = twin  # the same colour
        idx[outside] = entry
    img = Image.fromarray(idx)
    img.putpalette(table.tobytes())
    if mask is not None:
        img.info["transparency"] = entry
    return img


def _numpy(a: Any) -> np.ndarray:
    """float32 NumPy view of an array or tensor."""
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


@lru_cache(maxsize=8)
def _spare_entry(cmap: str) -> tuple[int, int] | None:
    """(i, j): entry j of the colour map has the colour of an earlier entry i (None if no such pair)."""
    first: dict[bytes, int] = {}
    for j, colour in enumerate(lut(cmap)):
        i = first.setdefault(colour.tobytes(), j)
        if i != j:
            return i, j
    return None


def upscale(img: Image.Image, size: int) -> Image.Image:
    """Enlarge a small picture to about ``size`` on its long side (nearest: pixels stay crisp)."""
    scale = size // max(img.size)
    if scale <= 1:
        return img
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
