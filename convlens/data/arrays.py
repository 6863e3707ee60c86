"""Arrays as a notebook holds them: ``X`` ``(N, H, W)`` or ``(N, H, W, C)``, uint8 or float
(``[0, 1]`` or ``0..255``), ``y`` integer labels (or one-hot); ``((X_train, y_train), (X_test,
y_test))`` is kept as the given split."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from .imageset import ImageSet


def _pixels(x: Any, what: str) -> torch.Tensor:
    """Notebook images to uint8 ``(N, C, H, W)``: (N, H, W) or (N, H, W, C) with C 1 or 3
    (or (N, C, H, W)); uint8 as they are, other numbers in [0, 1] (scaled by 255) or 0..255."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: not an array of images ({exc})", param="data") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or a.dtype == bool:
        raise DataError(f"{what}: images must be numbers (got dtype {a.dtype})", param="data")
    shape = "x".join(map(str, a.shape)) or "a scalar"
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    elif a.ndim == 4 and a.shape[1] in (1, 3):
        pass
    else:
        raise DataError(f"{what}: images of shape {shape}; want (N, H, W) or (N, H, W, C) with 1 or 3 channels",
                        param="data")
    if a.shape[0] == 0 or a.shape[2] < 1 or a.shape[3] < 1:
        raise DataError(f"{what}: images of shape {shape} hold no pixels", param="data")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    v = a.astype(np.float64)
    if not np.isfinite(v).all():
        raise DataError(f"{what}: images hold NaN or infinite values", param="data")
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 or hi > 255:
        raise DataError(f"{what}: pixel values from {lo:g} to {hi:g}; want uint8, floats in [0, 1] "
                        f"or numbers in 0..255", param="data")
    if hi <= 1.0 and not np.issubdtype(a.dtype, np.integer):
        v = v * 255.0
    return torch.from_numpy(np.ascontiguousarray(np.rint(v).astype(np.uint8)))


def _labels(y: Any, n: int, what: str) -> torch.Tensor:
    """Integer labels ``(N,)`` (or one-hot ``(N, K)``) to long ``(N,)``."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    try:
        a = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: labels are not an array ({exc})", param="data") from None
    if a.ndim == 2 and a.shape[0] == n and a.shape[1] > 1:
        a = a.argmax(axis=1)  # one-hot (Keras' to_categorical)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{what}: {n} images but labels of shape {'x'.join(map(str, a.shape)) or 'a scalar'}; "
                        f"want {n} labels", param="data")
    if not np.issubdtype(a.dtype, np.number) or a.dtype == bool:
        raise DataError(f"{what}: labels must be whole numbers 0..K-1 (got dtype {a.dtype})", param="data")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.isfinite(a).all() or not np.all(a == np.round(a)):
            raise DataError(f"{what}: labels must be whole numbers 0..K-1", param="data")
    a = a.astype(np.int64)
    if a.size and int(a.min()) < 0:
        raise DataError(f"{what}: label {int(a.min())} is negative; want 0..K-1", param="data")
    return torch.from_numpy(a)


def array_source(x: Any, y: Any, class_names: Sequence[str] | None = None, *,
                 test: "tuple[Any, Any] | None" = None) -> ImageSet:
    """Images and labels as a notebook holds them (NumPy arrays or tensors) as an :class:`ImageSet`.

    Args:
        x: ``(N, H, W)`` or ``(N, H, W, C)`` images (C = 1 or 3; ``(N, C, H, W)`` too), uint8 as
            they are, floats in [0, 1] scaled by 255, other numbers in 0..255.
        y: ``N`` integer labels 0..K-1, or one-hot ``(N, K)``.
        class_names: one per label (default ``"0"``, ``"1"``...).
        test: a second ``(x, y)`` pair, kept as the given test split.

    Returns:
        ImageSet: ids ``#i`` (``train#i`` and ``test#i`` with ``test``); ``source["digest"]``
            identifies the pixels and labels (runs of the same arrays compare; a run keeps them to
            be evaluated again).

    Raises:
        DataError: arrays of the wrong shape, type or range, labels that do not fit, class names
            that are too few or repeated, or fewer than two classes (naming the parameter).
    """
    what = "data (arrays)"
    xs = [_pixels(x, what)]
    ys = [_labels(y, len(xs[0]), what)]
    if test is not None:
        if not isinstance(test, (tuple, list)) or len(test) != 2:
            raise DataError(f"{what}: the test part must be an (x, y) pair", param="data")
        xt = _pixels(test[0], "data (test arrays)")
        xs.append(xt)
        ys.append(_labels(test[1], len(xt), "data (test arrays)"))
        if xt.shape[1:] != xs[0].shape[1:]:
            raise DataError(f"{what}: train images are {tuple(xs[0].shape[1:])} (C, H, W) and test images "
                            f"{tuple(xt.shape[1:])}; they must be the same size", param="data")
    images, labels = torch.cat(xs), torch.cat(ys)
    top = int(labels.max()) if len(labels) else 0
    if class_names is None:
        names = [str(i) for i in range(top + 1)]
    else:
        if isinstance(class_names, str):
            raise DataError("class_names must be a list of names, one per label (got a string)", param="class_names")
        names = [str(c) for c in class_names]
        if len(names) <= top:
            raise DataError(f"class_names: {len(names)} names for labels up to {top}; give one name per label "
                            f"0..{top}", param="class_names")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise DataError(f"class_names: {dup!r} is given twice; every class needs its own name",
                            param="class_names")
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        raise DataError(f"{what}: needs at least two classes to train a classifier (found only "
                        f"{names[present[0]] if present else 'none'!r})", param="data")
    h = hashlib.sha256()
    h.update(str((tuple(images.shape), names)).encode())
    h.update(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    if test is not None:
        h.update(str(len(xs[0])).encode())
    n0 = len(xs[0])
    ids = [f"#{i}" for i in range(n0)] if test is None else \
        [f"train#{i}" for i in range(n0)] + [f"test#{i}" for i in range(len(images) - n0)]
    given = None if test is None else ["train"] * n0 + ["test"] * (len(images) - n0)
    c, hh, ww = images.shape[1:]
    read = f"{n0} train and {len(images) - n0} test images as the given split" if test is not None else None
    source = {"kind": "arrays", "spec": "arrays", "digest": h.hexdigest()[:32], "n": int(len(images))}
    if read:
        source["read"] = read
    return ImageSet(images, labels, names, ids, source, given_split=given)
