"""Tiled feature-map grids drawn with Pillow (fast: no matplotlib figure per grid)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .colors import colorize, font

BG = (255, 255, 255)
INK = (33, 37, 41)
MUTED = (108, 117, 125)


def to_pil_image(x: torch.Tensor) -> Image.Image:
    """A (C, H, W) tensor in [0, 1] (C = 1 or 3) to a PIL RGB image."""
    x = x.detach().float().clamp(0, 1).cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(K, h, w) to (K, size, size') keeping aspect; nearest when enlarging (pixels stay visible)."""
    k, h, w = maps.shape
    scale = size / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    mode = "nearest" if scale >= 1 else "area"
    return F.interpolate(maps[:, None].float(), size=(th, tw), mode=mode)[:, 0]


def colorbar(width: int, vmin: float, vmax: float, cmap: str, height: int = 12) -> Image.Image:
    """A horizontal colour bar labelled with its end values."""
    ramp = torch.linspace(0, 1, width).expand(height, width)
    bar = Image.fromarray(colorize(ramp, 0.0, 1.0, cmap), "RGB")
    f = font(12)
    out = Image.new("RGB", (width, height + 18), BG)
    out.paste(bar, (0, 0))
    d = ImageDraw.Draw(out)
    d.text((0, height + 2), f"{vmin:.3g}", fill=MUTED, font=f)
    label = f"{vmax:.3g}"
    d.text((width - d.textlength(label, font=f), height + 2), label, fill=MUTED, font=f)
    return out


def tile_maps(maps: torch.Tensor, labels: Sequence[str], vmin: float, vmax: float, *,
              cmap: str = "viridis", cols: int | None = None, tile: int | None = None,
              width: int = 960, gap: int = 4) -> Image.Image:
    """Tile (K, h, w) maps into one image with a label over each tile and one colour scale."""
    k = maps.shape[0]
    cols = cols or max(1, math.ceil(math.sqrt(k * 1.6)))
    cols = min(cols, k)
    rows = math.ceil(k / cols)
    tile = tile or int(max(40, min(192, (width - gap * cols) / cols)))
    up = _upsample(maps, tile)
    th, tw = up.shape[1:]
    rgb = colorize(up, vmin, vmax, cmap)  # (K, th, tw, 3)
    label_h = 16
    W = cols * (tw + gap) - gap
    H = rows * (th + label_h + gap)
    canvas = np.full((H, W, 3), 255, dtype=np.uint8)
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = r * (th + label_h + gap) + label_h, c * (tw + gap)
        canvas[y:y + th, x:x + tw] = rgb[i]
    img = Image.fromarray(canvas, "RGB")
    d = ImageDraw.Draw(img)
    f = font(11)
    for i, lab in enumerate(labels):
        r, c = divmod(i, cols)
        d.text((c * (tw + gap) + 1, r * (th + label_h + gap) + 2), lab, fill=MUTED, font=f)
    return img


def titled(body: Image.Image, title: str, subtitle: str = "", footer: Image.Image | None = None,
           left: Image.Image | None = None, left_caption: str = "", pad: int = 14) -> Image.Image:
    """Frame ``body`` with a title line, an optional image on the left and a footer."""
    ft, fs = font(17, bold=True), font(13)
    head = 28 + (20 if subtitle else 0)
    lw = 0
    if left is not None:
        lw = left.width + pad
    W = pad + lw + body.width + pad
    fh = footer.height + 8 if footer is not None else 0
    H = head + max(body.height, (left.height + 20) if left is not None else 0) + fh + pad
    out = Image.new("RGB", (max(W, 320), H), BG)
    d = ImageDraw.Draw(out)
    d.text((pad, 8), title, fill=INK, font=ft)
    if subtitle:
        d.text((pad, 32), subtitle, fill=MUTED, font=fs)
    if left is not None:
        out.paste(left, (pad, head))
        if left_caption:
            d.text((pad, head + left.height + 3), left_caption, fill=MUTED, font=font(12))
    out.paste(body, (pad + lw, head))
    if footer is not None:
        out.paste(footer, (pad + lw, head + body.height + 6))
    return out


def image_rows(rows: Sequence[tuple[Image.Image, torch.Tensor]], col_labels: Sequence[str],
               row_labels: Sequence[str], vmin: float, vmax: float, *, cmap: str = "viridis",
               tile: int = 112, gap: int = 4) -> Image.Image:
    """One row per image: its thumbnail, then the same channels' maps side by side."""
    label_w = 0
    f = font(12)
    n_cols = max(len(m) for _, m in rows) + 1
    top = 18
    W = n_cols * (tile + gap) + label_w
    H = top + len(rows) * (tile + gap + 16)
    out = Image.new("RGB", (W, H), BG)
    d = ImageDraw.Draw(out)
    for j, lab in enumerate(col_labels):
        d.text(((j + 1) * (tile + gap), 2), lab, fill=MUTED, font=f)
    for i, ((thumb, maps), rl) in enumerate(zip(rows, row_labels)):
        y = top + i * (tile + gap + 16)
        t = thumb.copy()
        t.thumbnail((tile, tile))
        out.paste(t, (0, y))
        d.text((0, y + tile + 1), rl[:22], fill=MUTED, font=f)
        up = _upsample(maps, tile)
        rgb = colorize(up, vmin, vmax, cmap)
        for j in range(rgb.shape[0]):
            out.paste(Image.fromarray(rgb[j], "RGB"), ((j + 1) * (tile + gap), y))
    return out
