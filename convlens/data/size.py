"""Sizes: ``"WxH"`` parsed (width x height, as every summary prints sizes), and resized copies of
an :class:`~convlens.data.imageset.ImageSet`."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .imageset import ImageSet


def parse_size(size: Any) -> tuple[int, int] | None:
    """A size as ``(h, w)``.

    Args:
        size: ``"WxH"`` (width x height, as ``--scale`` and every summary print sizes: ``"32x30"``
            is 32 wide, 30 tall), one number (square), an ``(h, w)`` tuple, or None / ``""``.

    Returns:
        tuple[int, int] | None: ``(h, w)``, each 1 to 4096; None for None or ``""``.

    Raises:
        DataError: anything else (naming ``size``).
    """
    if size is None or (isinstance(size, str) and size == ""):  # (== "" on an array is elementwise)
        return None
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").replace("×", "x").split("x")
        if len(parts) == 1:
            parts = parts * 2
        try:
            w, h = (int(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            h = w = None
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        h, w = int(size[0]), int(size[1])
    else:
        h = w = None
    if h is None or w is None:
        raise DataError(f"size {size!r}: want WxH, e.g. 28x28 or 32x30 (width x height)", param="size")
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise DataError(f"size {size!r}: width and height must be between 1 and 4096", param="size")
    return h, w


class SizeWarning(UserWarning):
    """A resize that turns landscape images portrait or the reverse (a size given as HxW?)."""


def resize_set(ds: ImageSet, size: Any) -> ImageSet:
    """Copies of every image at another size (antialiased bilinear, uint8).

    A size that swaps the images' orientation (64x60 faces to 60x64) draws a :class:`SizeWarning`:
    it distorts every image.

    Args:
        ds: the data set.
        size: ``"WxH"`` or an ``(h, w)`` tuple (:func:`parse_size`); None keeps the set as it is.

    Returns:
        ImageSet: the resized set, ``source["size"]`` recording ``[h, w]`` (a run re-reads its data
            at the same size); ``ds`` itself when it is already that size.

    Raises:
        DataError: a bad ``size``.
    """
    hw = parse_size(size)
    if hw is None or tuple(ds.images.shape[-2:]) == hw:
        return ds
    h0, w0 = (int(v) for v in ds.images.shape[-2:])
    if (h0 - w0) * (hw[0] - hw[1]) < 0:
        warnings.warn(f"size {hw[1]}x{hw[0]} (width x height) turns {w0}x{h0} images "
                      f"{'portrait' if hw[0] > hw[1] else 'landscape'}: every image is distorted; "
                      f"for their shape write {hw[0]}x{hw[1]}", SizeWarning, stacklevel=2)
    chunks = []
    for i in range(0, len(ds), 4096):
        x = ds.images[i:i + 4096].float()
        y = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
        chunks.append(y.round().clamp(0, 255).to(torch.uint8))
    images = torch.cat(chunks) if chunks else ds.images
    source = {**ds.source, "size": [hw[0], hw[1]],
              "original_size": list(ds.source.get("original_size") or ds.images.shape[-2:])}
    return ImageSet(images.contiguous(), ds.labels, list(ds.class_names), list(ds.ids), source,
                    given_split=ds.given_split, skipped=ds.skipped, skipped_files=list(ds.skipped_files))
