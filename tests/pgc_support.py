"""pytorch-grad-cam (PGC) 1.5.7 as the oracle: its maps, and its projections oriented.

Eigen-CAM's and Eigen-Grad-CAM's first principal component has an arbitrary sign (LAPACK
decides; torch's and NumPy's SVD differ); convlens orients it so that it correlates positively
with the channel sum of the projected maps.  ``oriented_pgc`` patches PGC's projection with the
same rule (``sign=+1``) or the opposite one (``sign=-1``), so a test compares with PGC itself, up
to that sign.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np


def pearson(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def orient_np(proj: np.ndarray, X: np.ndarray, sign: float = 1.0) -> np.ndarray:
    """``proj`` (B, h, w) flipped per image to correlate positively with ``X.sum(1)`` (B, C, h, w),
    times ``sign``."""
    out = []
    for p, x in zip(proj, X):
        ref = np.nan_to_num(x).sum(0)
        dot = float(((p - p.mean()) * (ref - ref.mean())).sum())
        out.append(sign * (-p if dot < 0 else p))
    return np.float32(out)


@contextlib.contextmanager
def oriented_pgc(sign: float = 1.0) -> Iterator[None]:
    """PGC's Eigen-CAM / Eigen-Grad-CAM / KPCA-CAM projections oriented (see the module doc)."""
    import pytorch_grad_cam.base_cam as base_cam
    import pytorch_grad_cam.eigen_cam as eigen_cam
    import pytorch_grad_cam.eigen_grad_cam as eigen_grad_cam
    import pytorch_grad_cam.kpca_cam as kpca_cam
    from pytorch_grad_cam.utils import svd_on_activations as svd

    plain, kernel = svd.get_2d_projection, svd.get_2d_projection_kernel

    def projection(X):
        return orient_np(plain(X), X, sign)

    def projection_kernel(X, kernel_name="sigmoid", gamma=None):
        return orient_np(kernel(X, kernel_name, gamma), X, sign)

    saved = [(m, name, getattr(m, name)) for m, name in (
        (eigen_cam, "get_2d_projection"), (eigen_grad_cam, "get_2d_projection"),
        (base_cam, "get_2d_projection"), (kpca_cam, "get_2d_projection_kernel"))]
    try:
        eigen_cam.get_2d_projection = projection
        eigen_grad_cam.get_2d_projection = projection
        base_cam.get_2d_projection = projection
        kpca_cam.get_2d_projection_kernel = projection_kernel
        yield
    finally:
        for m, name, f in saved:
            setattr(m, name, f)
