"""ROAD's noisy linear imputation, solved for a whole batch at once by full multigrid.

The system (pytorch-grad-cam's ``NoisyLinearImputer``, Rong et al. 2022): every removed pixel equals
the weighted mean of its in-image neighbours, weights 1/6 (edges) and 1/12 (corners), known pixels
fixed. On the removed pixels that is ``A z = b``: ``A = s - nb`` (``s`` the sum of a pixel's in-image
neighbour weights: 1 inside, less on the border; ``nb`` the neighbour sum among removed pixels), ``b``
the neighbour sum of the known pixels. ``A`` is symmetric positive definite (every removed region
touches a known pixel unless nothing is known), and the same for the channels, so the masks are
``(N, 1, H, W)`` and every vector ``(N, C, H, W)``: all images, fractions and channels at once.

The peer solves it with one scipy sparse LU per image (about a second at 224 px). Here:

- **Coarse grids by Galerkin products.** The grid is coarsened by two, vertex-centred (coarse node
  ``I`` sits on fine pixel ``2I``; a grid of ``n`` has ``n // 2 + 1`` coarse nodes, so an even side
  gets one virtual node past its edge), with bilinear interpolation ``P`` (fine ``2I`` = coarse
  ``I``, fine ``2I+1`` = the mean of ``I`` and ``I+1``) zeroed on the known pixels, and restriction
  ``R = P^T``. The coarse operator ``P^T A P`` is again a 9-point stencil, one per mask and coarse
  node, and it is a linear function of the fine stencil: one strided 3x3 convolution from the 9
  stencil fields to the coarse centre and 4 forward offsets, the other 4 by symmetry
  (:func:`galerkin`; on the finest grid from 5 fields of the masks, :func:`fine_galerkin`). Being
  the exact restriction of the fine problem, a coarse solution corrects the fine one, near the
  masks' edges too (re-discretised coarse problems, with a coarse pixel known when any of its block
  is, cannot: they solve a slightly different problem, which was the limit of the cascade this
  replaced). Zeroed on the known pixels, ``P`` can lose rank, so a coarse operator may be only
  semidefinite (see ``_Dense``).
- **Full multigrid.** The right-hand side is restricted down to a grid of at most ``_DENSE``
  nodes, solved there exactly (batched Cholesky, float64), and the solution is carried up: on each
  coarse grid, interpolated and improved by one V-cycle (one weighted l1-Jacobi sweep before and
  after the coarser correction); on the finest, interpolated and smoothed by one Jacobi sweep.
  Extra V-cycles on the finest grid (``cycles``) converge to the exact solution.

Measured (``bench/score_bench.py``; ``bench/road_agreement.py``: 14 photos x Grad-CAM and LayerCAM
maps x both orders x fractions 0.1-0.9, 280 masks at 224 px, against pytorch-grad-cam's exact
sparse solve; ``tests/test_imputation.py``):

- cost: about 40 ms for 16 masks x 3 channels at 224 px on 2 CPU cores, setup included (about a
  third, mostly the Galerkin convolutions); the cascade of 20 conjugate-gradient iterations this
  replaced took about 160 ms, pytorch-grad-cam's 16 sparse solves about 4 s;
- imputed pixels: 0.0017 rms from the exact solve with no extra cycle (the cascade: 0.0166), then
  0.00078, 0.00039 and 0.00012 after 1, 2 and 4 extra cycles;
- ROAD scores: within 0.014 of pytorch-grad-cam's with no extra cycle, 0.002 with one.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from ..errors import SpecError

_DENSE = 100  #: grids of at most this many nodes are solved exactly
#: the weight of the l1-Jacobi sweeps on the coarse grids (``_Coarse``; 1 on the finest, see ``_Fine``):
#: l1-Jacobi converges for any weight below 2, and its row sums overestimate the operator, so a
#: large weight smooths best (measured on the 280 masks of the module doc: 1.0, 1.5, 1.8, 1.9 gave
#: imputation errors of 0.0042, 0.0024, 0.0017, 0.0016 rms)
_OMEGA = 1.8

#: the 9 stencil offsets (dy, dx), row-major; index 4 is the centre
OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _nb_sum(P: torch.Tensor) -> torch.Tensor:
    """``[1,2,1] x [1,2,1]`` weighted sum over each pixel's 3x3 block of a zero-bordered ``(..., H+2, W+2)``."""
    H, W = P.shape[-2] - 2, P.shape[-1] - 2
    h = P[..., :W] + P[..., 2:]
    h.add_(P[..., 1:W + 1], alpha=2)
    v = h[..., :H, :] + h[..., 2:, :]
    v.add_(h[..., 1:H + 1, :], alpha=2)
    return v


def _pad(t: torch.Tensor) -> torch.Tensor:
    return F.pad(t, (1, 1, 1, 1))


def weight_sum(H: int, W: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(1, 1, H, W)``: the in-image neighbour weight of every pixel (1 inside, less on the border)."""
    ones = torch.ones(1, 1, H, W, device=device, dtype=dtype)
    return _nb_sum(_pad(ones)) / 12 - ones / 3


def coarse_size(n: int) -> int:
    """Nodes of the coarse grid over ``n`` fine ones (a side of 1 or 2 is not coarsened)."""
    return n // 2 + 1 if n > 2 else n


# -- grid transfers: P (interpolate) and R = P^T (restrict), along the axes that are coarsened ----

def _interp_axis(c: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if c.shape[dim] == n:  # not coarsened along this axis
        return c
    shape = list(c.shape)
    shape[dim] = n
    f = c.new_empty(shape)
    ne, no = (n + 1) // 2, n // 2
    _every_other(f, dim, 0).copy_(c.narrow(dim, 0, ne))
    _every_other(f, dim, 1).copy_(c.narrow(dim, 0, no)).add_(c.narrow(dim, 1, no)).mul_(0.5)
    return f


def _every_other(t: torch.Tensor, dim: int, start: int) -> torch.Tensor:
    index = [slice(None)] * t.dim()
    index[dim] = slice(start, None, 2)
    return t[tuple(index)]


def interpolate(c: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``P``: bilinear, vertex-centred, from ``(..., coarse_size(H), coarse_size(W))`` to ``(..., H, W)``."""
    return _interp_axis(_interp_axis(c, W, -1), H, -2)


def _restrict_axis(f: torch.Tensor, dim: int) -> torch.Tensor:
    n = f.shape[dim]
    m = coarse_size(n)
    if m == n:
        return f
    ne, no = (n + 1) // 2, n // 2
    shape = list(f.shape)
    shape[dim] = m
    c = f.new_empty(shape)
    c.narrow(dim, 0, ne).copy_(_every_other(f, dim, 0))
    if ne < m:  # an even side: the virtual node past the edge starts empty
        c.narrow(dim, ne, m - ne).zero_()
    half = _every_other(f, dim, 1) * 0.5
    c.narrow(dim, 0, no).add_(half)
    c.narrow(dim, 1, no).add_(half)
    return c


def restrict(f: torch.Tensor) -> torch.Tensor:
    """``R = P^T`` (:func:`interpolate`'s transpose): ``(..., H, W)`` to the coarse grid."""
    return _restrict_axis(_restrict_axis(f, -1), -2)


# -- stencils: (N, 9, H, W), field k the coupling of each node with its neighbour at OFFSETS[k] ---

def fine_stencil(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The fine system's stencil ``(N, 9, H, W)`` on the removed pixels ``u (N, 1, H, W)`` (1 =
    removed): ``s`` on the centre, minus the neighbour weights between two removed pixels; the rows
    and columns of known pixels 0."""
    N, _, H, W = u.shape
    up = _pad(u)
    S = u.new_empty(N, 9, H, W)
    for k, (dy, dx) in enumerate(OFFSETS):
        out = S[:, k:k + 1]
        if (dy, dx) == (0, 0):
            torch.mul(u, s, out=out)
        else:
            torch.mul(u * (-1 / 12 if dy and dx else -1 / 6), up[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W], out=out)
    return S


def _p(t: int, coarsened: bool = True) -> float:
    """1D interpolation weight of a fine node ``t`` steps from a coarse node's own: bilinear along a
    coarsened axis, the identity along one that is not."""
    if not coarsened:
        return float(t == 0)
    return (1.0, 0.5)[abs(t)] if abs(t) <= 1 else 0.0


def _axis_weights(coarsened: bool) -> list[list[list[float]]]:
    """``w[D][d][a]`` (offsets -1..1 as 0..2) of one axis: the weight of fine stencil offset ``d``
    at fine node ``a`` from the coarse node (``2I + a``, or ``I`` along an axis not coarsened) in the
    coarse stencil offset ``D``."""
    step = 2 if coarsened else 1
    return [[[_p(a, coarsened) * _p(a + d - step * D, coarsened) for a in (-1, 0, 1)] for d in (-1, 0, 1)]
            for D in (-1, 0, 1)]


@functools.lru_cache(maxsize=16)
def _galerkin_kernel(cy: bool, cx: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(5, 9, 3, 3)``: the centre and the 4 forward coarse offsets (``OFFSETS[4:]``) from the 9 fine fields."""
    wy, wx = _axis_weights(cy), _axis_weights(cx)
    K = torch.zeros(5, 9, 3, 3, dtype=torch.float64)
    for D, (Dy, Dx) in enumerate(OFFSETS[4:]):
        for k, (dy, dx) in enumerate(OFFSETS):
            for ay in range(3):
                for ax in range(3):
                    K[D, k, ay, ax] = wy[Dy + 1][dy + 1][ay] * wx[Dx + 1][dx + 1][ax]
    return K.to(device=device, dtype=dtype)


def _symmetric(half: torch.Tensor) -> torch.Tensor:
    """The whole coarse stencil ``(N, 9, h, w)`` from its centre and forward offsets ``(N, 5, h, w)``:
    ``P^T A P`` is symmetric, so ``A_c[I, I-D] = A_c[I-D, I]`` (0 where ``I-D`` is off the grid)."""
    N, _, h, w = half.shape
    C = half.new_empty(N, 9, h, w)
    C[:, 4:] = half
    for k in range(5, 9):
        dy, dx = OFFSETS[k]
        back = C[:, 8 - k]
        back.zero_()
        back[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            C[:, k, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return C


def _coarsened(H: int, W: int) -> tuple[bool, bool]:
    return coarse_size(H) < H, coarse_size(W) < W


def galerkin(S: torch.Tensor) -> torch.Tensor:
    """The coarse stencil ``(N, 9, h, w)`` of ``P^T A P`` for a stencil ``S (N, 9, H, W)``:
    ``A_c[I, I+D] = sum over a, d of p(a) S_d(2I + a) p(a + d - 2D)``, a strided 3x3 convolution
    of the 9 fine fields into the centre and the 4 forward offsets (the rest by symmetry). One
    zero node all round, and one more past an even side (the fine node of the virtual coarse node
    past the edge), make the couplings to nodes outside either grid 0."""
    H, W = S.shape[-2:]
    cy, cx = _coarsened(H, W)
    Sp = F.pad(S, (1, 1 + (cx and W % 2 == 0), 1, 1 + (cy and H % 2 == 0)))
    return _symmetric(F.conv2d(Sp, _galerkin_kernel(cy, cx, S.dtype, S.device), stride=(1 + cy, 1 + cx)))


#: the forward neighbour offsets: every pair of neighbouring pixels is one of these, seen from one end
FORWARD = OFFSETS[5:]


@functools.lru_cache(maxsize=16)
def _fine_kernel(cy: bool, cx: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(5, 5, 5, 5)``: :func:`galerkin`'s kernel for the finest grid, whose stencil is a function of
    5 fields (:func:`_pair_fields`): its backward couplings are the forward ones shifted,
    ``S_-d(i) = S_d(i - d)``, so each pair field enters twice, at taps ``t`` and ``t - d``."""
    sy, sx = 1 + cy, 1 + cx
    K = torch.zeros(5, 5, 5, 5, dtype=torch.float64)
    for D, (Dy, Dx) in enumerate(OFFSETS[4:]):
        for ty in range(-2, 3):
            for tx in range(-2, 3):
                py, px = _p(ty, cy), _p(tx, cx)
                K[D, 0, ty + 2, tx + 2] = py * _p(ty - sy * Dy, cy) * px * _p(tx - sx * Dx, cx)
                for c, (dy, dx) in enumerate(FORWARD, 1):
                    w = 1 / 12 if dy and dx else 1 / 6
                    K[D, c, ty + 2, tx + 2] = -w * (
                        py * _p(ty + dy - sy * Dy, cy) * px * _p(tx + dx - sx * Dx, cx)
                        + _p(ty + dy, cy) * _p(ty - sy * Dy, cy) * _p(tx + dx, cx) * _p(tx - sx * Dx, cx))
    return K.to(device=device, dtype=dtype)


def _pair_fields(u: torch.Tensor, s: torch.Tensor, margins: tuple[int, int, int, int]) -> torch.Tensor:
    """``(N, 5, H', W')`` on the grid padded by ``margins``: ``u * s``, then ``u_i * u_(i+d)`` for the 4
    forward offsets ``d`` (computed over the padded grid, where u is 0: no border to fill)."""
    N, _, H, W = u.shape
    left, right, top, bottom = margins
    uu = F.pad(u, (left + 1, right + 1, top + 1, bottom + 1))
    Hp, Wp = H + top + bottom, W + left + right
    centre = uu[..., 1:Hp + 1, 1:Wp + 1]
    X = u.new_empty(N, 5, Hp, Wp)
    torch.mul(centre, F.pad(s, margins), out=X[:, :1])
    for c, (dy, dx) in enumerate(FORWARD, 1):
        torch.mul(centre, uu[..., 1 + dy:Hp + 1 + dy, 1 + dx:Wp + 1 + dx], out=X[:, c:c + 1])
    return X


def fine_galerkin(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """:func:`galerkin` of :func:`fine_stencil`, from the masks directly: 5 input fields instead of 9
    (a 5x5 kernel, 85 of its 625 taps non-zero): 6.7 ms instead of 12.5 ms for 16 masks of 224 px
    on 2 CPU cores, the stencil fields included."""
    H, W = u.shape[-2:]
    cy, cx = _coarsened(H, W)
    margins = (2, 2 + (cx and W % 2 == 0), 2, 2 + (cy and H % 2 == 0))
    X = _pair_fields(u, s, margins)
    return _symmetric(F.conv2d(X, _fine_kernel(cy, cx, u.dtype, u.device), stride=(1 + cy, 1 + cx)))


def apply_stencil(S: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for a stencil ``S (N, 9, H, W)`` and vectors ``x (N, C, H, W)``."""
    H, W = x.shape[-2:]
    xp = _pad(x)
    y = S[:, 4:5] * x
    for k, (dy, dx) in enumerate(OFFSETS):
        if k != 4:
            y.addcmul_(S[:, k:k + 1], xp[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W])
    return y


# -- the levels ----------------------------------------------------------------------------------

class _Fine:
    """The finest grid: the operator from the masks directly (four shifted adds, no stencil fields).
    Its neighbour sums go through buffers kept for the call: the vectors here are the largest, and
    fresh memory costs page faults (about a fifth of the imputation with glibc's default allocator)."""

    def __init__(self, u: torch.Tensor, s: torch.Tensor):
        self.u, self.s = u, s
        self.known = 1 - u
        self.u12 = u / 12
        # one Jacobi sweep on whole images, t -> t + (u / s) * (b - A e) = keep * t + take * nb_sum(t):
        # a removed pixel becomes the weighted mean of its neighbours, a known one stays
        self.take = self.u12 / s
        self.keep = self.known - u / (3 * s)
        self._padded: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    @functools.cached_property
    def s3(self) -> torch.Tensor:  # A x = s3 * x - u/12 * nb_sum(x)   (nb_sum counts the centre 4x)
        return (self.s + 1 / 3) * self.u

    @functools.cached_property
    def inv_d(self) -> torch.Tensor:  # Jacobi weight 1: its smoothing factor on this stencil is 1/3
        return self.u / self.s

    def nb_sum(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`_nb_sum` of ``x (N, C, H, W)`` (zero outside the image), into ``out`` if given."""
        N, C, H, W = x.shape
        if self._padded is None or self._padded.shape != (N, C, H + 2, W + 2):
            self._padded = x.new_zeros(N, C, H + 2, W + 2)  # the border stays 0
            self._rows = x.new_empty(N, C, H + 2, W)
        P, h = self._padded, self._rows
        P[..., 1:H + 1, 1:W + 1].copy_(x)
        torch.add(P[..., :W], P[..., 2:], out=h)
        h.add_(P[..., 1:W + 1], alpha=2)
        out = torch.add(h[..., :H, :], h[..., 2:, :], out=out)
        return out.add_(h[..., 1:H + 1, :], alpha=2)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` on the removed pixels; on whole images ``t`` (known pixels included), ``-A(t)`` is
        the residual ``b - A e`` of their removed part ``e``."""
        return self.nb_sum(x).mul_(-self.u12).addcmul_(self.s3, x)

    def sweep(self, t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """One Jacobi sweep on whole images ``t`` (into ``out`` if given, not ``t``)."""
        return self.nb_sum(t, out=out).mul_(self.take).addcmul_(self.keep, t)


class _Coarse:
    def __init__(self, S: torch.Tensor):
        self.S = S
        # l1-Jacobi: the row's absolute sum instead of its diagonal, convergent on any SPD stencil (on
        # these Galerkin operators the diagonal alone is not: D^-1 A reaches 2.2 on the coarsest grids)
        d = S.abs().sum(1, keepdim=True)
        live = d > 0  # a coarse node whose interpolation touches no removed pixel has an empty row
        self.inv_d = torch.where(live, _OMEGA / torch.where(live, d, torch.ones_like(d)), torch.zeros_like(d))

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return apply_stencil(self.S, x)


@functools.lru_cache(maxsize=8)
def _dense_index(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    n = h * w
    i = torch.arange(n, device=device)
    yy, xx = i // w, i % w
    flat, src = [], []
    for k, (dy, dx) in enumerate(OFFSETS):
        ok = (yy + dy >= 0) & (yy + dy < h) & (xx + dx >= 0) & (xx + dx < w)
        rows = i[ok]
        flat.append(rows * n + rows + dy * w + dx)
        src.append(k * n + rows)
    return torch.cat(flat), torch.cat(src)


class _Dense:
    """The coarsest grid, solved exactly: the stencil as a full matrix per mask (identity rows for
    empty nodes), Cholesky-factored once in float64."""

    def __init__(self, S: torch.Tensor):
        N, _, h, w = S.shape
        n = h * w
        flat, src = _dense_index(h, w, S.device)
        M = torch.zeros(N, n * n, dtype=torch.float64, device=S.device)
        M[:, flat] = S.reshape(N, 9 * n)[:, src].double()
        M = M.view(N, n, n)
        d = S[:, 4].reshape(N, n).double()
        # Empty nodes get a 1. Zeroed on the known pixels, P can lose rank (two coarse nodes whose
        # interpolations meet only on the same few removed pixels), so P^T A P is semidefinite, and
        # float32 rounding of the Galerkin products can tip it just below zero. Its null vectors
        # interpolate to nothing (P x = 0) and the right-hand sides (P^T r) are orthogonal to them,
        # so any solution serves: a ridge of 1e-6 of the diagonal makes the factorisation succeed
        # (and keeps a mask with nothing known, a singular system, finite).
        M.diagonal(dim1=1, dim2=2).add_((d <= 0).double() + 1e-6 * d.clamp_min(0) + 1e-12)
        self.L, _ = torch.linalg.cholesky_ex(M)
        self.live = (d > 0).to(S.dtype).view(N, 1, h, w)

    def solve(self, r: torch.Tensor) -> torch.Tensor:
        N, C, h, w = r.shape
        z = torch.cholesky_solve(r.reshape(N, C, h * w).transpose(1, 2).double(), self.L)
        return z.transpose(1, 2).reshape(N, C, h, w).to(r.dtype) * self.live


def _solved_directly(H: int, W: int) -> bool:
    """A grid small enough for the dense solve, or one that cannot be coarsened further."""
    return H * W <= _DENSE or _coarsened(H, W) == (False, False)


#: vectors with fewer values than this are worked on by one thread: an operation on a small tensor
#: costs more in waking a second thread than it saves (most with OMP_WAIT_POLICY=PASSIVE, as the
#: Makefile sets it: 72 us against 19 us for one multiply of 156k values on 2 cores)
_SERIAL = 200_000


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _small(t: torch.Tensor) -> bool:
    """Too small to share between threads (and not already worked on by one)."""
    return t.numel() < _SERIAL and torch.get_num_threads() > 1


def _one_thread_when_small(cycle: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A cycle on a grid whose vectors are :func:`_small` runs (with the grids below it) on one thread."""
    @functools.wraps(cycle)
    def run(self: Any, level: int, r: torch.Tensor) -> torch.Tensor:
        if _small(r):
            with _one_thread():
                return cycle(self, level, r)
        return cycle(self, level, r)
    return run


class Multigrid:
    """The grid hierarchy of one batch of masks ``u (N, 1, H, W)`` (1 = removed)."""

    def __init__(self, u: torch.Tensor):
        H, W = u.shape[-2:]
        s = weight_sum(H, W, u.device, u.dtype)
        self.fine = _Fine(u, s)
        self.coarse: list[_Coarse] = []
        self.direct = _solved_directly(H, W)  # small enough to solve at once
        S = fine_stencil(u, s) if self.direct else fine_galerkin(u, s)
        self._coarsen(S)

    def _coarsen(self, S: torch.Tensor) -> None:
        if _small(S):
            with _one_thread():
                return self._coarsen(S)
        while not _solved_directly(*S.shape[-2:]):
            self.coarse.append(_Coarse(S))
            S = galerkin(S)
            if _small(S):
                return self._coarsen(S)
        self.dense = _Dense(S)
        return None

    @_one_thread_when_small
    def _vcycle(self, level: int, r: torch.Tensor) -> torch.Tensor:
        """One V-cycle on coarse level ``level`` (0 = the first below the finest) from zero."""
        if level == len(self.coarse):
            return self.dense.solve(r)
        lv = self.coarse[level]
        e = lv.inv_d * r
        ec = self._vcycle(level + 1, restrict(r - lv.A(e)))
        e.add_(interpolate(ec, *r.shape[-2:]))
        return e.addcmul_(lv.inv_d, r - lv.A(e))

    @_one_thread_when_small
    def _fcycle(self, level: int, r: torch.Tensor) -> torch.Tensor:
        """Full multigrid on coarse level ``level``: the coarser solution, interpolated, then one V-cycle."""
        if level == len(self.coarse):
            return self.dense.solve(r)
        e = interpolate(self._fcycle(level + 1, restrict(r)), *r.shape[-2:])
        return e.add_(self._vcycle(level, r - self.coarse[level].A(e)))

    def _fine_vcycle(self, r: torch.Tensor) -> torch.Tensor:
        f = self.fine
        e = f.inv_d * r
        e.addcmul_(f.u, interpolate(self._vcycle(0, restrict(r - f.A(e))), *r.shape[-2:]))
        return e.addcmul_(f.inv_d, r - f.A(e))

    def solve(self, v: torch.Tensor, cycles: int = 0) -> torch.Tensor:
        """The whole images ``v (N, C, H, W)`` with their removed pixels solved for (known ones exact)."""
        f = self.fine
        z = v * f.known
        b = f.nb_sum(z).mul_(f.u12)  # the known neighbours' share (s3 * z is 0: z is 0 where u is 1)
        if self.direct:
            return z + self.dense.solve(b)
        t = interpolate(self._fcycle(0, restrict(b)), *v.shape[-2:]).mul_(f.u).add_(z)
        t = f.sweep(t, out=b)  # b is not needed any more: its memory takes the result
        for _ in range(cycles):
            t.add_(self._fine_vcycle(-f.A(t)))
        return t


def impute(x: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01, cycles: int = 0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy linear imputation of the ``removed`` pixels of ``x (N, C, H, W)`` (``removed (N, H, W)`` bool).

    Every removed pixel becomes the weighted mean of its in-image neighbours (known or removed),
    solved for all images and channels at once by full multigrid (see the module doc); ``cycles``
    extra V-cycles on the finest grid bring it closer to the exact solution (each two- to tenfold:
    about twofold on photos' CAM masks at 224 px, tenfold on the small images of the tests).
    Then Gaussian noise of standard deviation ``noise`` is added to the removed pixels.
    """
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 0:
        raise SpecError(f"cycles must be a whole number of at least 0 (got {cycles!r})", param="cycles")
    v = x.float()
    u = removed.to(v.dtype).unsqueeze(1)
    out = Multigrid(u).solve(v, cycles)
    if noise:
        draws = torch.randn(out.shape, generator=generator, device=x.device, dtype=out.dtype)
        out.addcmul_(draws, u, value=noise)
    return out.to(x.dtype)
