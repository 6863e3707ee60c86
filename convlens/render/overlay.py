"""Heatmap overlays (colour maps and the grid live in :mod:`.colors` and :mod:`.grid`).

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
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import ImageError, SpecError
from ..images import load_image
from .colors import COLORMAPS, check_cmap, colorize, font
from .grid import fit_image, grid

__all__ = ["COLORMAPS", "NO_EVIDENCE", "check_cmap", "colorize", "grid", "heat_array", "heat_rgb", "is_empty",
           "mark_empty", "overlay", "soft_box", "to_rgb"]

#: the note drawn on a heatmap with no positive value (a CAM whose ReLU left nothing): without it such
#: a map is drawn in the colour map's lowest colour everywhere (solid dark blue in jet), which reads
#: as "uniformly unimportant" rather than "nothing to show"
NO_EVIDENCE = "no positive evidence for this class"

#: a heatmap whose maximum is at most this is empty (CAMs are min-max scaled with an epsilon of
#: 1e-7, so a map with any real positive evidence peaks near 1)
EMPTY_MAX = 1e-6

#: narrowest picture (pixels) on which the note is written; :func:`mark_empty` enlarges smaller ones
NOTE_MIN_WIDTH = 64


def is_empty(heatmap: Any) -> bool:
    """True when a heatmap (array or tensor, any shape) has no value above :data:`EMPTY_MAX`
    (NaN counts as 0): no positive evidence, e.g. a Grad-CAM whose weighted sum is <= 0 everywhere."""
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().float().cpu().numpy()
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return h.size == 0 or float(h.max()) <= EMPTY_MAX


def mark_empty(img: Image.Image, text: str = NO_EVIDENCE, min_width: int = 224) -> Image.Image:
    """``img`` with ``text`` written across its middle on a white band, so an empty map is never
    mistaken for a map of low values.  A picture narrower than ``min_width`` is first enlarged by a
    whole factor with nearest neighbours (crisp pixels) so the words are legible; the font follows
    the width and the words wrap."""
    img = img.convert("RGB")
    if img.width < min_width:
        k = -(-min_width // img.width)
        img = fit_image(img, img.width * k, img.height * k)
    else:
        img = img.copy()
    W, H = img.size
    f = font(max(9, min(18, W // 14)))
    d = ImageDraw.Draw(img)
    lines: list[str] = []
    for word in text.split():
        if lines and d.textlength(lines[-1] + " " + word, font=f) <= W - 8:
            lines[-1] += " " + word
        else:
            lines.append(word)
    step = int(f.size * 1.25)
    band_h = step * len(lines) + 6
    y0 = max(0, (H - band_h) // 2)
    band = Image.new("RGB", (W, min(band_h, H)), (255, 255, 255))
    img.paste(Image.blend(img.crop((0, y0, W, y0 + band.height)), band, 0.8), (0, y0))
    for k, line in enumerate(lines):
        d.text(((W - d.textlength(line, font=f)) / 2, y0 + 3 + k * step), line, fill=(33, 37, 41), font=f)
    return img


def grey_out(img: Image.Image, amount: float = 0.45) -> Image.Image:
    """``img`` in grey, blended towards white by ``amount``: a picture shown without any map."""
    grey = img.convert("L").convert("RGB")
    return Image.blend(grey, Image.new("RGB", img.size, (255, 255, 255)), amount)


def heat_array(heatmap: Any) -> np.ndarray:
    """A 2-D heatmap (array or tensor) as float32 in [0, 1]: squeezed, NaN to 0, min-max
    scaled when it is not already in [0, 1]."""
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().float().cpu().numpy()
    h = np.squeeze(np.asarray(heatmap, dtype=np.float32))
    if h.ndim != 2:
        raise SpecError(f"a heatmap must be 2-D (H x W), got shape {tuple(h.shape)}", param="heatmap")
    h = np.nan_to_num(h, nan=0.0, posinf=1.0, neginf=0.0)
    lo, hi = float(h.min()), float(h.max())
    if lo < 0.0 or hi > 1.0:  # not yet normalised: min-max it
        h = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
    return h


def heat_rgb(heatmap: Any, cmap: str = "jet") -> Image.Image:
    """A heatmap (see :func:`heat_array`) as an RGB image in the colour map."""
    return Image.fromarray(colorize(heat_array(heatmap), 0.0, 1.0, cmap), mode="RGB")


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
        return load_image(image)
    if hasattr(image, "detach"):  # torch tensor
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
            preprocess: Any = None, box: tuple[float, float, float, float] | None = None,
            note: bool = True) -> Image.Image:
    """Blend a heatmap (resized to the picture if needed) over a picture.

    ``alpha`` is the heatmap's weight: 0 shows the picture, 1 only the heatmap.  ``box``:
    ``(x0, y0, x1, y1)``, the part of the picture the heatmap covers (a model's centre crop);
    outside it the picture is shown washed out, without colour, and the box's edge is drawn
    as a thin soft line (no hard rectangle of the colour map's bottom colour).

    An empty heatmap (:func:`is_empty`: no positive value) is not drawn in the colour map's lowest
    colour: the picture is shown washed out in grey and, with ``note`` and a picture at least
    :data:`NOTE_MIN_WIDTH` pixels wide, :data:`NO_EVIDENCE` is written on it (the size is kept;
    :func:`mark_empty` enlarges a small picture to write it).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise SpecError(f"alpha must be between 0 and 1 (got {alpha})", param="alpha")
    check_cmap(cmap)
    base = to_rgb(image, preprocess)
    if is_empty(heatmap):
        if float(alpha) == 0.0:
            return base
        out = grey_out(base)
        if box is not None:
            W, H = base.size
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
            if not (x0 <= 0 and y0 <= 0 and x1 >= W and y1 >= H):
                out = soft_box(out, (x0, y0, x1, y1))
        return mark_empty(out, min_width=0) if note and base.width >= NOTE_MIN_WIDTH else out
    h = heat_array(heatmap)
    if (h.shape[1], h.shape[0]) != base.size:
        h = np.clip(np.asarray(Image.fromarray(h, mode="F").resize(base.size, Image.BILINEAR)), 0, 1)
    heat = Image.fromarray(colorize(h, 0.0, 1.0, cmap), mode="RGB")
    out = Image.blend(base, heat, float(alpha))
    if box is None:
        return out
    W, H = base.size
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if x0 <= 0 and y0 <= 0 and x1 >= W and y1 >= H:
        return out  # the map covers the whole picture (a plain resize)
    washed = Image.blend(base, Image.new("RGB", base.size, (255, 255, 255)), 0.45)
    if x1 > x0 and y1 > y0:
        washed.paste(out.crop((x0, y0, x1, y1)), (x0, y0))
    return soft_box(washed, (x0, y0, x1, y1))


def soft_box(img: Image.Image, box: tuple[int, int, int, int], color: tuple[int, int, int] = (33, 37, 41),
             opacity: float = 0.55) -> Image.Image:
    """``img`` with the edge of ``box`` drawn as a thin dashed line at ``opacity`` (a soft boundary)."""
    line = Image.new("RGB", img.size, color)
    mask = Image.new("L", img.size, 0)
    d = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    width = max(1, round(min(img.size) / 200))
    dash = max(4, round(min(img.size) / 40))
    value = int(round(255 * opacity))
    for x in range(x0, x1, 2 * dash):
        for y in (y0, y1 - width):
            d.rectangle((x, y, min(x + dash, x1) - 1, y + width - 1), fill=value)
    for y in range(y0, y1, 2 * dash):
        for x in (x0, x1 - width):
            d.rectangle((x, y, x + width - 1, min(y + dash, y1) - 1), fill=value)
    return Image.composite(line, img, mask)
