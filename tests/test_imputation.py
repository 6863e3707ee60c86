"""ROAD's imputation by full multigrid (convlens/lens/imputation.py): its parts against their
definitions, its results against pytorch-grad-cam's exact sparse solve, and the masks that break
naive solvers (nothing removed, everything removed, isolated pixels, thin and tiny images)."""

from __future__ import annotations

import pytest
import torch

from convlens.lens import imputation as im


def _dense_operator(S: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` matrix of one stencil ``S (9, H, W)`` (couplings off the grid dropped)."""
    _, H, W = S.shape
    A = torch.zeros(H * W, H * W, dtype=torch.float64)
    for k, (dy, dx) in enumerate(im.OFFSETS):
        for y in range(H):
            for x in range(W):
                if 0 <= y + dy < H and 0 <= x + dx < W:
                    A[y * W + x, (y + dy) * W + x + dx] += float(S[k, y, x])
    return A


def _interpolation_matrix(H: int, W: int) -> torch.Tensor:
    """``P`` as a matrix, column by column, from :func:`interpolate` itself."""
    h, w = im.coarse_size(H), im.coarse_size(W)
    eye = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    return im.interpolate(eye, H, W).reshape(h * w, H * W).T


@pytest.mark.parametrize("H,W", [(7, 6), (5, 9), (8, 8), (2, 9), (1, 8), (6, 2)])
def test_interpolation_is_bilinear_and_restriction_its_transpose(H, W):
    P = _interpolation_matrix(H, W)
    assert torch.allclose(P.sum(1), torch.ones(H * W, dtype=torch.float64))  # constants are kept
    f = torch.randn(3, 2, H, W, dtype=torch.float64)
    R = im.restrict(f).reshape(3, 2, -1)
    assert torch.allclose(R, f.reshape(3, 2, -1) @ P)


@pytest.mark.parametrize("H,W", [(7, 6), (5, 9), (8, 8), (2, 9), (9, 1)])
def test_galerkin_is_the_product_of_the_matrices(H, W):
    g = torch.Generator().manual_seed(H * 10 + W)
    u = (torch.rand(2, 1, H, W, generator=g) > 0.4).double()
    S = im.fine_stencil(u, im.weight_sum(H, W, dtype=torch.float64))
    C = im.galerkin(S)
    P = _interpolation_matrix(H, W)
    for i in range(2):
        A = _dense_operator(S[i])
        assert torch.allclose(_dense_operator(C[i]), P.T @ A @ P, atol=1e-12)
        assert torch.allclose(A, A.T)  # the fine operator is symmetric, hence the coarse one
    # from the masks directly (5 fields, 5x5 kernel): the same stencil
    if im.coarse_size(H) < H or im.coarse_size(W) < W:
        assert torch.allclose(im.fine_galerkin(u, im.weight_sum(H, W, dtype=torch.float64)), C, atol=1e-12)


def _exact(img: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    return torch.stack([NoisyLinearImputer(noise=0)(img[i], (~removed[i]).float()) for i in range(img.shape[0])])


@pytest.mark.parametrize("H,W", [(64, 60), (28, 28)])
def test_scattered_and_blob_masks_agree_with_the_sparse_solve(H, W):
    """Masks of every kind at the sizes people use: isolated pixels (LeRF of a noisy map; these make
    the coarse operators only semidefinite, as masked interpolations lose rank), half the image at
    random, a blob, all but a blob. No extra cycle: close; 6 extra cycles: exact."""
    g = torch.Generator().manual_seed(H)
    img = torch.rand(5, 3, H, W, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    blob = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2) < 0.08
    removed = torch.stack([torch.rand(H, W, generator=g) < 0.05, torch.rand(H, W, generator=g) < 0.1,
                           torch.rand(H, W, generator=g) < 0.5, blob, ~blob])
    theirs = _exact(img, removed)
    first = im.impute(img, removed, noise=0)
    assert torch.equal(first[~removed[:, None].expand_as(img)], img[~removed[:, None].expand_as(img)])
    err = (first - theirs).abs()
    assert err.max() < 0.08  # the worst: half the pixels of a noise image, at random
    assert err.sum() / (3 * removed.sum()) < 0.005
    assert (im.impute(img, removed, noise=0, cycles=6) - theirs).abs().max() < 1e-3


def test_nothing_removed_everything_removed_and_tiny_images():
    img = torch.rand(2, 3, 32, 30)
    none = torch.zeros(2, 32, 30, dtype=torch.bool)
    assert torch.equal(im.impute(img, none, noise=0), img)
    every = torch.ones(2, 32, 30, dtype=torch.bool)  # nothing known: a singular system, still finite
    assert torch.isfinite(im.impute(img, every, noise=0)).all()
    for H, W in [(1, 50), (50, 1), (3, 3), (2, 2), (1, 1), (9, 11)]:
        g = torch.Generator().manual_seed(H * W)
        small = torch.rand(2, 3, H, W, generator=g)
        removed = torch.rand(2, H, W, generator=g) < 0.5
        removed[:, 0, 0] = False  # one known pixel at least
        ours = im.impute(small, removed, noise=0, cycles=8)
        assert torch.allclose(ours, _exact(small, removed), atol=1e-4), (H, W)


def test_noise_lands_on_the_removed_pixels_only_and_follows_the_generator():
    img = torch.rand(2, 3, 20, 20)
    removed = torch.rand(2, 20, 20, generator=torch.Generator().manual_seed(0)) < 0.3
    a = im.impute(img, removed, noise=0.01, generator=torch.Generator().manual_seed(5))
    b = im.impute(img, removed, noise=0.01, generator=torch.Generator().manual_seed(5))
    clean = im.impute(img, removed, noise=0)
    assert torch.equal(a, b)
    keep = ~removed[:, None].expand_as(img)
    assert torch.equal(a[keep], img[keep])
    d = (a - clean)[~keep]
    assert 0.005 < d.std() < 0.015


@pytest.mark.parametrize("cycles", [-1, 1.5, True])
def test_bad_cycles_name_themselves(cycles):
    from convlens.errors import SpecError

    with pytest.raises(SpecError, match="cycles") as e:
        im.impute(torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool), cycles=cycles)
    assert e.value.param == "cycles"
