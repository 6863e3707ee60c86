"""Grids of pictures drawn with Pillow (fast: no matplotlib figure per grid).

- :func:`grid`: THE compositor. Titled tiles of PIL images in rows and columns, with row
  titles, column (or per-cell) titles and a title; every grid in the package is drawn by it
  (CAM methods x targets, journey tiles and comparisons, dataset examples...).
- :func:`tile_maps`: ``(K, h, w)`` feature maps on one colour scale, tiled with a label each.
- :func:`map_tiles` / :func:`map_image` / :func:`stage_image`: the single tiles (the web page
  shows them one by one).
- :func:`titled`, :func:`colorbar`, :func:`to_pil_image`: framing helpers.

>>> from PIL import Image
>>> cells = [[Image.new("RGB", (20, 10), "red"), Image.new("RGB", (20, 10), "blue")]]
>>> grid(cells, row_titles=["row"], col_titles=["a", "b"], cell=32).mode
'RGB'
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..errors import SpecError
from .colors import DIVERGING, colorize, font, robust_range
from .files import figure_text

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


def fit_size(hw: Sequence[int], size: int) -> tuple[int, int]:
    """``(h, w)`` scaled so the long side is ``size`` (aspect kept, at least 1 pixel)."""
    h, w = int(hw[0]), int(hw[1])
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(K, h, w) to a long side of ``size``, aspect kept; nearest when enlarging (pixels stay visible)."""
    h, w = maps.shape[-2:]
    mode = "nearest" if size >= max(h, w) else "area"
    return F.interpolate(maps[:, None].float(), size=fit_size((h, w), size), mode=mode)[:, 0]


def _fit_text(text: str, draw: ImageDraw.ImageDraw, f, width: int) -> str:
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "…", font=f) > width:
        text = text[:-1]
    return text + "…"


def _wrap_text(text: str, draw: ImageDraw.ImageDraw, f, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` (a word too long for a line
    is cut with an ellipsis): titles wrap instead of being cut off on a narrow grid."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and draw.textlength(lines[-1] + " " + word, font=f) <= width:
            lines[-1] += " " + word
        else:
            lines.append(_fit_text(word, draw, f, width))
    return lines or [""]


def fit_image(img: Image.Image, cw: int, ch: int) -> Image.Image:
    """Fit ``img`` into a ``cw`` x ``ch`` cell: enlarged with nearest neighbours (an integer
    factor, pixels stay crisp) or shrunk smoothly."""
    img = img.convert("RGB")
    w, h = img.size
    if w > cw or h > ch:
        img = img.copy()
        img.thumbnail((cw, ch), Image.BILINEAR)
        return img
    k = min(cw // w, ch // h)
    return img.resize((w * k, h * k), Image.NEAREST) if k > 1 else img


def cell_for(hw: Sequence[int], target: int = 128, largest: int | None = None) -> tuple[int, int]:
    """A ``(width, height)`` cell for pictures of ``hw`` = (h, w): a whole multiple of the picture
    nearest to a long side of ``target`` (28 px -> 4x = 112, 64x60 -> 2x = 128x120), so small
    images are enlarged with crisp square pixels; a picture larger than ``largest`` (default
    ``target``) is shrunk to it, aspect kept.

    >>> cell_for((28, 28)), cell_for((60, 64)), cell_for((224, 224), 160)
    ((112, 112), (128, 120), (160, 160))
    """
    h, w = max(1, int(hw[0])), max(1, int(hw[1]))
    long = max(h, w)
    largest = target if largest is None else largest
    if long >= largest:
        fh, fw = fit_size((h, w), largest)
        return fw, fh
    k = max(1, target // long)
    return w * k, h * k


def stack(*parts: Image.Image | None, pad: int = 6, align: str = "left") -> Image.Image:
    """Pictures one under another on white (``None`` skipped), left-aligned or centred."""
    items = [p for p in parts if p is not None]
    W = max(p.width for p in items)
    H = sum(p.height for p in items) + pad * (len(items) - 1)
    out = Image.new("RGB", (W, H), BG)
    y = 0
    for p in items:
        out.paste(p.convert("RGB"), ((W - p.width) // 2 if align == "center" else 0, y))
        y += p.height + pad
    return out


def grid(cells: Sequence[Sequence[Image.Image | None]], row_titles: Sequence[str] | None = None,
         col_titles: Sequence[Sequence[str]] | Sequence[str] | None = None, title: str | None = None,
         cell: int | tuple[int, int] = 224, pad: int = 6, *, subtitle: str | None = None,
         font_size: int = 13) -> Image.Image:
    """Tile PIL images in rows and columns with titles; the one grid compositor.

    ``cells``: rows of images (``None`` leaves a cell empty); each is fitted into a ``cell``
    (an int for square cells, or ``(width, height)``), centred: enlarged by a whole factor with
    nearest neighbours (small maps stay crisp) or shrunk smoothly.  ``row_titles``: one per
    row, on the left.  ``col_titles``: one per column (a header line above the first row), or
    one list per row (each cell its own, above it; a newline breaks it into lines).
    ``title``/``subtitle``: lines above all.
    """
    rows = [list(r) for r in cells]
    if not rows or not any(c is not None for r in rows for c in r):
        raise SpecError("a grid needs at least one image")
    # names are data: undecodable bytes and control characters drawn escaped, never a crash
    row_titles = [figure_text(t) for t in row_titles] if row_titles else row_titles
    if col_titles:
        col_titles = [[figure_text(t) if t else t for t in r] if isinstance(r, (list, tuple))
                      else (figure_text(r) if r else r) for r in col_titles]
    title = figure_text(title) if title else title
    subtitle = figure_text(subtitle) if subtitle else subtitle
    cw, ch = (cell, cell) if isinstance(cell, int) else (int(cell[0]), int(cell[1]))
    ncol = max(len(r) for r in rows)
    f, tf, sf = font(font_size), font(font_size + 3, bold=True), font(max(9, font_size - 1))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = font_size + 5
    left = 0
    if row_titles:
        widest = max(probe.textlength(part, font=f) for t in row_titles for part in str(t).split("\n"))
        left = int(min(180, math.ceil(widest) + 2 * pad))
    W = left + ncol * (cw + pad) + pad
    title_lines = _wrap_text(title, probe, tf, W - 2 * pad) if title else []
    sub_lines = _wrap_text(subtitle, probe, sf, W - 2 * pad) if subtitle else []
    top = ((line + 4) * len(title_lines) + (pad if title else 0)) + (line + 2) * len(sub_lines)
    per_cell = bool(col_titles) and isinstance(col_titles[0], (list, tuple))
    cap = 0
    if per_cell:  # a per-cell title may have several lines ("\n")
        cap = line * max((str(t).count("\n") + 1 for r in col_titles for t in r if t), default=1)
    head_lines = 0
    if col_titles and not per_cell:  # a header line above the first row (a "\n" adds lines)
        head_lines = max((str(t).count("\n") + 1 for t in col_titles if t), default=1)
        top += line * head_lines
    H = top + len(rows) * (ch + cap + pad) + pad
    canvas = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(canvas)
    y0 = pad // 2
    for text in title_lines:
        draw.text((pad, y0), text, fill=INK, font=tf)
        y0 += line + 4
    for text in sub_lines:
        draw.text((pad, y0), text, fill=MUTED, font=sf)
        y0 += line + 2
    if col_titles and not per_cell:
        for c, name in enumerate(col_titles[:ncol]):
            for k, text in enumerate(str(name).split("\n") if name else []):
                draw.text((left + c * (cw + pad) + pad, top - line * (head_lines - k) + pad),
                          _fit_text(text, draw, f, cw), fill=MUTED if k else INK, font=f)
    for r, row in enumerate(rows):
        y = top + r * (ch + cap + pad) + pad
        if row_titles and r < len(row_titles):
            parts = str(row_titles[r]).split("\n")
            y_text = y + cap + ch // 2 - (len(parts) * line) // 2
            for k, text in enumerate(parts):
                draw.text((pad, y_text + k * line), _fit_text(text, draw, f, left - 2 * pad + 1),
                          fill=INK if k == 0 else MUTED, font=f)
        for c, img in enumerate(row):
            x = left + c * (cw + pad) + pad
            if per_cell and r < len(col_titles) and c < len(col_titles[r]) and col_titles[r][c]:
                for k, text in enumerate(str(col_titles[r][c]).split("\n")):
                    draw.text((x, y + k * line), _fit_text(text, draw, f, cw), fill=MUTED, font=f)
            if img is None:
                continue
            thumb = fit_image(img, cw, ch)
            canvas.paste(thumb, (x + (cw - thumb.width) // 2, y + cap + (ch - thumb.height) // 2))
    return canvas


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


def map_tiles(maps: torch.Tensor, vmin: float, vmax: float, *, cmap: str = "viridis",
              tile: int = 96) -> list[Image.Image]:
    """One RGB tile per ``(K, h, w)`` map, long side ``tile``, all on one colour scale."""
    rgb = colorize(upsample_maps(maps.detach().float().cpu(), tile), vmin, vmax, cmap)
    return [Image.fromarray(np.ascontiguousarray(rgb[i]), "RGB") for i in range(rgb.shape[0])]


def tile_maps(maps: torch.Tensor, labels: Sequence[str], vmin: float, vmax: float, *,
              cmap: str = "viridis", cols: int | None = None, tile: int | None = None,
              width: int = 960, gap: int = 4) -> Image.Image:
    """Tile (K, h, w) maps into one image with a label over each tile and one colour scale."""
    k = maps.shape[0]
    cols = min(cols or max(1, math.ceil(math.sqrt(k * 1.6))), k)
    tile = tile or int(max(40, min(192, (width - gap * cols) / cols)))
    tiles = map_tiles(maps, vmin, vmax, cmap=cmap, tile=tile)
    th, tw = fit_size(maps.shape[-2:], tile)
    rows = [tiles[i:i + cols] for i in range(0, k, cols)]
    names = [list(labels[i:i + cols]) for i in range(0, k, cols)]
    return grid(rows, col_titles=names, cell=(tw, th), pad=gap, font_size=11)


def map_image(values: torch.Tensor, size: int = 320, cmap: str = "viridis",
              signed: bool | None = None) -> Image.Image:
    """One 2-D map as a colour image, enlarged (nearest) towards ``size``: a symmetric
    diverging scale when it has both signs (or ``signed``), else its value range."""
    v = torch.as_tensor(values).detach().float().cpu()
    lo, hi = robust_range(v, 0.0, 1.0) if v.numel() else (0.0, 1.0)
    if signed is None:
        signed = lo < 0 < hi
    if signed:
        m = max(abs(lo), abs(hi)) or 1.0
        lo, hi, cmap = -m, m, DIVERGING
    h, w = v.shape[-2:]
    scale = max(1, size // max(h, w))
    big = F.interpolate(v[None, None], scale_factor=scale, mode="nearest")[0, 0] if scale > 1 else v
    return Image.fromarray(colorize(big, lo, hi, cmap), "RGB")


def stage_image(t: torch.Tensor, size: int = 320) -> Image.Image:
    """A ``(C, h, w)`` array as a picture: 3 channels as RGB clipped to [0, 1]; one channel
    diverging when it has both signs, grey by its range otherwise."""
    t = torch.as_tensor(t).detach().float().cpu()
    if t.shape[0] == 3:
        img = to_pil_image(t)
        w, h = img.size
        scale = max(1, size // max(h, w))
        return img.resize((w * scale, h * scale), Image.NEAREST) if scale > 1 else img
    v = t[0]
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 < hi:
        return map_image(v, size, signed=True)
    return map_image(v, size, cmap="gray", signed=False)


def titled(body: Image.Image, title: str, subtitle: str = "", footer: Image.Image | None = None,
           left: Image.Image | None = None, left_caption: str = "", pad: int = 14) -> Image.Image:
    """Frame ``body`` with a title line, an optional image on the left and a footer."""
    ft, fs = font(17, bold=True), font(13)
    title, subtitle, left_caption = figure_text(title), figure_text(subtitle), figure_text(left_caption)
    head = 28 + (20 if subtitle else 0)
    lw = 0
    if left is not None:
        lw = left.width + pad
    W = pad + lw + body.width + pad
    fh = footer.height + 8 if footer is not None else 0
    H = head + max(body.height, (left.height + 20) if left is not None else 0) + fh + pad
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textlength(title, font=ft), probe.textlength(subtitle, font=fs) if subtitle else 0)
    out = Image.new("RGB", (max(W, 320, math.ceil(text_w) + 2 * pad), H), BG)
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
    """One row per image: its thumbnail, then the same channels' maps side by side (one scale)."""
    cells = [[thumb, *map_tiles(maps, vmin, vmax, cmap=cmap, tile=tile)] for thumb, maps in rows]
    th, tw = fit_size(rows[0][1].shape[-2:], tile) if rows else (tile, tile)
    return grid(cells, row_titles=[str(r)[:22] for r in row_labels], col_titles=["input", *col_labels],
                cell=(max(tw, 1), max(th, 1)), pad=gap, font_size=12)
