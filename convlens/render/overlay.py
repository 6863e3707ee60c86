"""Colour maps, heatmap overlays and the methods x targets grid.

``overlay`` puts a heatmap over a picture, whatever form the picture is in:
a PIL image, a uint8 or float array (HxW, HxWx3, CxHxW), a grayscale image, or
a normalised model-input tensor (give the model's ``Preprocess`` to undo the
normalisation).

>>> import numpy as np
>>> img = np.zeros((32, 48, 3), dtype=np.uint8)
>>> heat = np.zeros((8, 12), dtype=np.float32); heat[4, 6] = 1.0
>>> out = overlay(img, heat, cmap="inferno", alpha=0.6)
>>> out.size, out.mode
((48, 32), 'RGB')
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ImageError, SpecError, closest

#: The colour maps named in the docs; any other matplotlib colour map name works too.
COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma", "plasma", "gray")


def _lut(cmap: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table for a matplotlib colour map name."""
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except (KeyError, ValueError):
        names = sorted(set(COLORMAPS) | set(matplotlib.colormaps))
        raise SpecError(f"unknown colour map {cmap!r}{closest(cmap, names)}") from None
    return np.rint(cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def colorize(heatmap: Any, cmap: str = "jet") -> Image.Image:
    """A heatmap in [0, 1] (HxW array or tensor) as an RGB image in the colour map."""
    h = _heat_array(heatmap)
    idx = np.clip(np.rint(h * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(_lut(cmap)[idx], mode="RGB")


def _heat_array(heatmap: Any) -> np.ndarray:
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().float().cpu().numpy()
    h = np.asarray(heatmap, dtype=np.float32)
    h = np.squeeze(h)
    if h.ndim != 2:
        raise SpecError(f"a heatmap must be 2-D (H x W), got shape {tuple(h.shape)}")
    h = np.nan_to_num(h, nan=0.0, posinf=1.0, neginf=0.0)
    lo, hi = float(h.min()), float(h.max())
    if lo < 0.0 or hi > 1.0:  # not yet normalised: min-max it
        h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    return h


def to_rgb(image: Any, preprocess: Any = None) -> Image.Image:
    """Any picture (PIL, array, tensor, grayscale, path) as an RGB PIL image.

    Tensors ``(C, H, W)`` or ``(1, C, H, W)`` are taken as model inputs when
    ``preprocess`` (a :class:`~convlens.models.Preprocess`) is given and
    de-normalised with it; otherwise values in [0, 1] are used as they are and
    anything else is min-max scaled.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (str, os.PathLike, bytes)):
        from ..images import load_image

        return load_image(image)
    if hasattr(image, "detach"):  # torch tensor
        import torch

        t = image.detach().float().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ImageError(f"one image expected, got a batch of {t.shape[0]}")
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3) and preprocess is not None:
            t = preprocess.denormalize(t[None])[0]
        elif t.ndim == 3 and t.shape[0] in (1, 3, 4):
            lo, hi = float(t.min()), float(t.max())
            if lo < 0.0 or hi > 1.0:
                t = (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)
        image = t.numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ImageError(f"array of shape {tuple(np.asarray(image).shape)} is not an image")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if arr.dtype.kind in "ui" and hi > 1:
            a = a / (65535.0 if hi > 255 else 255.0)
        elif lo < 0.0 or hi > 1.0:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        arr = np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def overlay(image: Any, heatmap: Any, cmap: str = "jet", alpha: float = 0.5,
            preprocess: Any = None) -> Image.Image:
    """Blend a heatmap (resized to the picture if needed) over a picture.

    ``alpha`` is the heatmap's weight: 0 shows the picture, 1 only the heatmap.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise SpecError(f"alpha must be between 0 and 1 (got {alpha})")
    base = to_rgb(image, preprocess)
    heat = colorize(heatmap, cmap)
    if heat.size != base.size:
        h = _heat_array(heatmap)
        resized = Image.fromarray(h.astype(np.float32), mode="F").resize(base.size, Image.BILINEAR)
        heat = colorize(np.clip(np.asarray(resized), 0, 1), cmap)
    return Image.blend(base, heat, float(alpha))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _fit(text: str, draw: ImageDraw.ImageDraw, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def grid(cells: Sequence[Sequence[Image.Image]], row_titles: Sequence[str] | None = None,
         col_titles: Sequence[Sequence[str]] | Sequence[str] | None = None, title: str | None = None,
         cell: int = 224, pad: int = 6) -> Image.Image:
    """Tile images in rows and columns with titles (e.g. methods x targets).

    ``col_titles`` is one title per column, or one list per row (each cell its own).
    """
    rows = [list(r) for r in cells]
    if not rows or not any(rows):
        raise SpecError("a grid needs at least one image")
    ncol = max(len(r) for r in rows)
    font = _font(13)
    tfont = _font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = 18
    left = 0
    if row_titles:
        left = int(min(160, max(probe.textlength(t, font=font) for t in row_titles) + 2 * pad))
    top = line + pad if title else 0
    per_cell_titles = bool(col_titles) and isinstance(col_titles[0], (list, tuple))
    cap = line if col_titles else 0
    W = left + ncol * (cell + pad) + pad
    H = top + len(rows) * (cell + cap + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), _fit(title, draw, tfont, W - 2 * pad), fill="black", font=tfont)
    for r, row in enumerate(rows):
        y = top + r * (cell + cap + pad) + pad
        if row_titles:
            draw.text((pad, y + cap + cell // 2 - 7), _fit(row_titles[r], draw, font, left - 2 * pad),
                      fill="black", font=font)
        for c, img in enumerate(row):
            x = left + c * (cell + pad) + pad
            if col_titles:
                t = col_titles[r][c] if per_cell_titles else col_titles[c]
                draw.text((x, y), _fit(t, draw, font, cell), fill="black", font=font)
            thumb = img.convert("RGB")
            thumb.thumbnail((cell, cell), Image.BILINEAR)
            ox = x + (cell - thumb.width) // 2
            oy = y + cap + (cell - thumb.height) // 2
            canvas.paste(thumb, (ox, oy))
    return canvas
