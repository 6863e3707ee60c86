"""Encoding pictures for HTTP: PNG bytes, data URLs, heatmaps as palette PNGs.

The pictures themselves come from the results (``figure()``, ``overlay()``) and from
:mod:`convlens.render`; this module only encodes them, fast (the page asks for many).
"""

from __future__ import annotations

import base64
from functools import lru_cache

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


def heat_image(heat: torch.Tensor, cmap: str = "jet", mask: torch.Tensor | None = None) -> Image.Image:
    """A [0, 1] heatmap as a colour image (same size); ``mask`` (0/1) becomes its alpha.

    A palette image: one byte a pixel, the colour map's entry as :func:`colorize` picks it,
    so it looks the same as RGB and encodes about 4x faster.  Masked pixels take an entry
    whose colour the map repeats (jet has four), made transparent; RGBA when there is none.
    """
    idx = (heat.detach().float().cpu() * 255.0).clamp(0, 255).round().to(torch.uint8).numpy()
    table = lut(cmap)
    if mask is not None:
        spare = _spare_entry(cmap)
        outside = mask.detach().cpu().numpy() < 0.5
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
