"""``digits``: scikit-learn's built-in 8x8 digits (offline, for demos and tests)."""

from __future__ import annotations

import numpy as np
import torch

from .imageset import ImageSet


def digits_source() -> ImageSet:
    """scikit-learn's 1,797 8x8 digits, offline.

    Returns:
        ImageSet: grey 8x8 images (values 0..16 scaled to 0..255), classes ``0``..``9``, ids ``#i``.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSet(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(d.target.astype(np.int64)),
                    [str(i) for i in range(10)], [f"#{i}" for i in range(len(x))],
                    {"kind": "digits", "spec": "digits"})
