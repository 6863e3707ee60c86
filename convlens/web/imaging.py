"""Small, fast picture helpers for the web API (PNG bytes, data URLs, colour maps)."""

from __future__ import annotations

import base64
from functools import lru_cache
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..render.colors import colorize, lut, robust_range


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def data_url(img: Image.Image) -> str:
    """``data:image/png;base64,...`` for an image (allowed by the page's CSP ``img-src data:``)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def enlarge(values: torch.Tensor, size: int) -> torch.Tensor:
    """(h, w) to a long side of ``size`` with nearest neighbours (pixels stay visible)."""
    h, w = values.shape[-2:]
    scale = max(1, size // max(h, w))
    return F.interpolate(values[None, None].float(), scale_factor=scale, mode="nearest")[0, 0]


def map_image(values: torch.Tensor, size: int = 320, cmap: str = "viridis",
              signed: bool | None = None) -> Image.Image:
    """One 2-D map as a colour image: symmetric diverging scale when it has both signs."""
    v = values.detach().float().cpu()
    lo, hi = robust_range(v, 0.0, 1.0) if v.numel() else (0.0, 1.0)
    if signed is None:
        signed = lo < 0 < hi
    if signed:
        m = max(abs(lo), abs(hi)) or 1.0
        lo, hi, cmap = -m, m, "RdBu_r"
    big = enlarge(v, size) if max(v.shape[-2:]) < size else v
    return Image.fromarray(colorize(big, lo, hi, cmap), "RGB")


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


def stage_image(t: torch.Tensor, size: int = 320) -> Image.Image:
    """A kernels-lab stage (C, h, w): RGB clipped to [0, 1]; one channel by its value range."""
    t = t.detach().float().cpu()
    if t.shape[0] == 3:
        arr = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        h, w = arr.shape[:2]
        scale = max(1, size // max(h, w))
        return img.resize((w * scale, h * scale), Image.Resampling.NEAREST) if scale > 1 else img
    v = t[0]
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 < hi:
        return map_image(v, size, signed=True)
    return map_image(v, size, cmap="gray", signed=False)


def upscale(img: Image.Image, size: int) -> Image.Image:
    """Enlarge a small picture to about ``size`` on its long side (nearest: pixels stay crisp)."""
    scale = size // max(img.size)
    if scale <= 1:
        return img
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
