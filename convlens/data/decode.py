"""Image files decoded into one tensor, shared by the sources that read files (``folder:``,
``cmu-faces:``): decoding in a thread pool with the unreadable files named, stacking at a common
size, and the check that a classifier has two classes to learn."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import ConvlensError, DataError
from ..images import load_image, load_many


def decode_files(paths: Sequence[Path], mode: str | None, root: Path) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode image files in a thread pool.

    Args:
        paths: the image files.
        mode: ``"L"`` or ``"RGB"`` to force the channels; None keeps each file's own.
        root: the folder the unreadable files are named relative to.

    Returns:
        tuple[list[np.ndarray | None], list[str]]: one array per file (None for a file that cannot be
            read) and the names of the unreadable files.
    """

    def one(p: Path) -> np.ndarray | None:
        try:
            return np.asarray(load_image(p, mode=mode))
        except ConvlensError:
            return None

    arrays = load_many(paths, one, workers=min(8, (os.cpu_count() or 1) * 2))
    bad = [str(p.relative_to(root)) for p, a in zip(paths, arrays) if a is None]
    return arrays, bad


def stack_images(arrays: list[np.ndarray], size: tuple[int, int] | None, what: str) -> torch.Tensor:
    """Stack images into one tensor, resizing those of another size.

    Args:
        arrays: ``HxW`` or ``HxWxC`` uint8 arrays (grey ones are repeated to RGB when any has colour).
        size: the common ``(w, h)``; None: the most common size among ``arrays``.
        what: the source, named in the error.

    Returns:
        torch.Tensor: uint8 ``(N, C, H, W)``.
    """
    from PIL import Image

    rgb = any(a.ndim == 3 for a in arrays)
    sizes = Counter((a.shape[1], a.shape[0]) for a in arrays)  # (w, h)
    target = size or sizes.most_common(1)[0][0]
    out = []
    for a in arrays:
        if rgb and a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if (a.shape[1], a.shape[0]) != tuple(target):
            a = np.asarray(Image.fromarray(a).resize(tuple(target), Image.BILINEAR))
        out.append(a if a.ndim == 3 else a[..., None])
    try:
        batch = np.stack(out)
    except ValueError as exc:  # pragma: no cover - shapes were normalised above
        raise DataError(f"{what}: cannot stack images ({exc})") from None
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def check_classes(labels: list[int], class_names: list[str], what: str) -> None:
    """Refuse a data set with fewer than two classes: nothing to train a classifier on.

    Args:
        labels: the items' class indices.
        class_names: the names the indices refer to.
        what: the source, named first in the error.

    Raises:
        DataError: fewer than two classes among ``labels``.
    """
    present = sorted(set(labels))
    if len(present) < 2:
        only = class_names[present[0]] if present else "none"
        raise DataError(f"{what}: needs at least two classes to train a classifier (found only {only!r})")
