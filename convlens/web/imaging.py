"""Small, fast picture helpers for the web API (PNG bytes, data URLs, colour maps)."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..render.colors import colorize, robust_range


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
    """A [0, 1] heatmap as a colour image (same size); ``mask`` (0/1) becomes its alpha."""
    rgb = colorize(heat.detach().float().cpu(), 0.0, 1.0, cmap)
    if mask is None:
        return Image.fromarray(rgb, "RGB")
    alpha = (mask.detach().float().cpu().numpy() * 255).round().astype(np.uint8)[..., None]
    return Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA")


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
