"""Classic kernels and a convolution / pooling playground with exact shape arithmetic.

Apply a named kernel (``"vertical-edge"``, ``"sobel-x"``, ``"gaussian"``...) or a
hand-written matrix (``"1,0,-1;1,0,-1;1,0,-1"``) to an image, in grayscale or per
colour channel, with a stride and ``valid``/``same``/integer padding, repeatedly if
asked, then max- or average-pool the result.  Every stage keeps its tensor and its
shape, and the arithmetic that produced the shape is spelled out.

Images (files, PIL images, ``uint8`` arrays) are pixels, read as 0..1; an array of
any other dtype (``float``, ``int64``...) is a matrix of numbers and is convolved as it
is, with no rescaling and no rounding, so a hand computation on your own numbers
gives the same values (``.npy`` and ``.csv`` files are read as numbers too: see
:func:`read_matrix`).

Convolution here is what CNN layers compute (cross-correlation: the kernel is *not*
flipped), so ``"1,0,-1;1,0,-1;1,0,-1"`` responds positively where the image gets
darker from left to right.

Examples:
    >>> from convlens.lens.kernels import apply_kernel, demo_image
    >>> result = apply_kernel(demo_image(), "vertical-edge", repeat=3)
    >>> result.shapes
    [(9, 9), (7, 7), (5, 5), (3, 3)]
    >>> result.to_dict()["arithmetic"][0]
    '9x9 * 3x3 (valid, stride 1) -> 7x7'
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import SpecError, closest
from ..images import ImageSource, load_image
from ..options import (FLOAT32_MAX, MAX_IMAGE_SIDE, MAX_KERNEL_SIDE, MAX_LAB_MACS, MAX_LAB_VALUES, KernelOptions,
                       check_options)
from ..render.files import OutDir, Saved, safe_stem
from ..render.kernels_fig import render_kernel_gallery, render_kernels
from ..view import View

Padding = Union[str, int]
KernelSpec = Union[str, Path, Sequence[Sequence[float]], Sequence[float], np.ndarray, torch.Tensor]

# --------------------------------------------------------------------------- kernels


def _frozen(rows: list[list[float]], scale: float = 1.0) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float64) * scale
    arr.setflags(write=False)
    return arr


#: Canonical kernel names and their matrices (cross-correlation convention).
_CANONICAL: dict[str, np.ndarray] = {
    "identity": _frozen([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "vertical-edge": _frozen([[1, 0, -1], [1, 0, -1], [1, 0, -1]]),
    "horizontal-edge": _frozen([[1, 1, 1], [0, 0, 0], [-1, -1, -1]]),
    "sobel-x": _frozen([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sobel-y": _frozen([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "laplacian": _frozen([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "outline": _frozen([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]),
    "sharpen": _frozen([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "box-blur": _frozen([[1, 1, 1], [1, 1, 1], [1, 1, 1]], 1 / 9),
    "gaussian-blur": _frozen([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16),
    "emboss": _frozen([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
}

_ALIASES: dict[str, str] = {
    "vertical": "vertical-edge",
    "horizontal": "horizontal-edge",
    "laplace": "laplacian",
    "edge": "outline",
    "blur": "box-blur",
    "box": "box-blur",
    "mean": "box-blur",
    "gaussian": "gaussian-blur",
    "gauss": "gaussian-blur",
}

#: Every accepted kernel name (canonical names and aliases) -> its matrix (read-only).
KERNELS: dict[str, np.ndarray] = {
    **_CANONICAL,
    **{alias: _CANONICAL[target] for alias, target in _ALIASES.items()},
}


def _norm(name: str) -> str:
    """Spelling-insensitive key: 'Sobel_X', 'sobel x' and 'sobelx' all match 'sobel-x'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY: dict[str, str] = {
    _norm(name): _ALIASES.get(name, name) for name in KERNELS
}


def kernel_names(aliases: bool = False) -> list[str]:
    """The named kernels, canonical names first (and then the aliases if asked).

    Args:
        aliases: also list the alternative spellings (``"blur"`` for ``"box-blur"``...) after the
            canonical names.

    Returns:
        list[str]: the names, in the catalogue's order; :func:`apply_kernel` accepts any of them.

    Examples:
        >>> kernel_names()[:3]
        ['identity', 'vertical-edge', 'horizontal-edge']
        >>> "blur" in kernel_names(aliases=True)
        True
    """
    names = list(_CANONICAL)
    return names + list(_ALIASES) if aliases else names


#: the largest .csv/.txt matrix file read (bytes): a 4096x4096 matrix of short numbers fits
MAX_MATRIX_TEXT = 256 << 20

#: file suffixes read as matrices of numbers (for an image or a kernel)
MATRIX_SUFFIXES = (".npy", ".csv", ".txt")

_MATRIX_CHARS = re.compile(r"[\s\d.,;+\-/eE\[\]]+")


def parse_kernel(spec: KernelSpec) -> tuple[str, np.ndarray]:
    """Resolve a kernel name or matrix to ``(name, 2-D float64 matrix)``.

    ``spec`` may be a name (any case, ``_``/space/``-`` insensitive), a matrix string
    with rows split by ``;`` or newlines and entries by ``,`` or spaces (fractions like
    ``1/9`` are fine, as is JSON ``"[[1,0],[0,-1]]"``), a nested list, a 1-D list (a
    single row) or an array.  Matrices get the name ``"custom"``.  Any size works, odd
    or even, square or not.

    Args:
        spec: the kernel's name or matrix.

    Returns:
        tuple[str, np.ndarray]: the canonical name (``"custom"`` for a matrix) and the read-only
            2-D float64 matrix.

    Raises:
        SpecError: an unknown name (with the closest names), a malformed, empty or ragged matrix,
            a matrix too large, or entries that are not finite or overflow float32.

    Examples:
        >>> parse_kernel("Sobel X")[0]
        'sobel-x'
        >>> parse_kernel("1,0,-1;1,0,-1;1,0,-1")[1].shape
        (3, 3)
        >>> parse_kernel([[1, -1], [1, -1]])[1].tolist()
        [[1.0, -1.0], [1.0, -1.0]]
    """
    if isinstance(spec, (str, Path)):
        return _parse_kernel_string(str(spec))
    if isinstance(spec, torch.Tensor):
        spec = spec.detach().cpu().numpy()
    if isinstance(spec, (np.ndarray, list, tuple)):
        return "custom", _as_matrix(spec)
    raise SpecError(f"kernel: expected a name or a matrix, got a {type(spec).__name__}", param="kernel")


def _parse_kernel_string(text: str) -> tuple[str, np.ndarray]:
    s = text.strip()
    if not s:
        raise SpecError("kernel is empty: give a name (e.g. vertical-edge) or a matrix like \"1,0,-1;1,0,-1;1,0,-1\"",
                        param="kernel")
    if Path(s).suffix.lower() in MATRIX_SUFFIXES and (os.path.isfile(s) or not _MATRIX_CHARS.fullmatch(s)):
        try:
            return safe_stem(Path(s).stem, "custom"), _as_matrix(read_matrix(s))
        except SpecError as exc:
            raise SpecError(f"kernel {exc}", param="kernel") from None
    key = _norm(s)
    if key in _BY_KEY:
        name = _BY_KEY[key]
        return name, np.array(KERNELS[name])
    if s.startswith("[["):
        try:
            return "custom", _as_matrix(json.loads(s))
        except (ValueError, RecursionError):  # bad JSON, a number of over 4300 digits, nesting too deep
            pass  # fall through to the lenient parser, which says what is wrong
    if _MATRIX_CHARS.fullmatch(s) or "," in s or ";" in s:
        return "custom", _matrix_from_string(s)
    raise SpecError(
        f"kernel {_short(s)} is not a known name{closest(s, KERNELS)} "
        f"(known: {', '.join(kernel_names())}; or a matrix such as \"1,0,-1;1,0,-1;1,0,-1\")", param="kernel")


def _short(text: str, limit: int = 48) -> str:
    """``text`` quoted, shortened with '...' so an error message stays readable."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _matrix_from_string(s: str) -> np.ndarray:
    """Parse ``"1,0,-1;1,0,-1"`` / ``"1 0 -1\\n1 0 -1"`` / ``"[1 0; 0 1]"`` strictly."""
    body = s.strip()
    s = _short(s)
    if body[:1] == "[" and body[-1:] == "]":
        body = body[1:-1]
    rows = [r.strip() for r in re.split(r"[;\n]", body)]
    while rows and not rows[-1]:
        rows.pop()  # a trailing ';' is harmless
    if not rows or not any(rows):
        raise SpecError(f"kernel {s} has no numbers", param="kernel")
    matrix: list[list[float]] = []
    for r, row in enumerate(rows, start=1):
        row = row.strip("[] \t")
        if not row:
            raise SpecError(f"kernel {s}: row {r} is empty (rows are separated by ';')", param="kernel")
        entries = [e.strip() for e in row.split(",")] if "," in row else row.split()
        values = [_number(entry, s, r, c) for c, entry in enumerate(entries, start=1)]
        if matrix and len(values) != len(matrix[0]):
            raise SpecError(
                f"kernel {s}: ragged rows: row {r} has {_entries(len(values))} "
                f"but row 1 has {_entries(len(matrix[0]))}", param="kernel")
        matrix.append(values)
    return _as_matrix(matrix)


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _number(entry: str, spec: str, row: int, col: int) -> float:
    if not entry:
        raise SpecError(f"kernel {spec}: row {row}, column {col} is empty (doubled or trailing ',')",
                        param="kernel")
    try:
        return float(entry)
    except ValueError:
        pass
    try:
        return float(Fraction(entry))
    except OverflowError:  # an exact fraction such as 10**400/1
        raise SpecError(f"kernel {spec}: entry {_short(entry, 16)} (row {row}, column {col}) is too large",
                        param="kernel") from None
    except (ValueError, ZeroDivisionError):
        raise SpecError(
            f"kernel {spec}: entry {_short(entry, 16)} (row {row}, column {col}) is not a number",
            param="kernel") from None


def _as_matrix(values: Any) -> np.ndarray:
    try:
        arr = np.array(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        what = "ragged rows (every row needs the same length)" if "inhomogeneous" in str(exc) \
            else "entries that are not numbers"
        raise SpecError(f"kernel: matrix has {what}", param="kernel") from None
    except OverflowError:  # an int beyond float range (10**400)
        raise SpecError("kernel: matrix has NaN or infinite entries", param="kernel") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise SpecError(f"kernel must be a 2-D matrix, got {arr.ndim} dimensions {tuple(arr.shape)}",
                        param="kernel")
    if arr.size == 0:
        raise SpecError("kernel: matrix is empty", param="kernel")
    if not np.isfinite(arr).all():
        raise SpecError("kernel: matrix has NaN or infinite entries", param="kernel")
    if max(arr.shape) > MAX_KERNEL_SIDE:
        raise SpecError(f"kernel: a {arr.shape[0]}x{arr.shape[1]} matrix is too large "
                        f"(at most {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE})", param="kernel")
    with np.errstate(over="ignore"):  # beyond float32's range = what float32 rounds to infinity
        big = np.isinf(arr.astype(np.float32))
    if big.any():
        r, c = (int(i) + 1 for i in np.argwhere(big)[0])
        raise SpecError(f"kernel: entry {arr[r - 1, c - 1]:g} (row {r}, column {c}) overflows float32 "
                        "(|x| <= 3.4e38)", param="kernel")
    return arr


def demo_image(size: int = 9, bar: int = 3, orientation: str = "vertical") -> np.ndarray:
    """A small black ``size``x``size`` uint8 image with a white bar ``bar`` pixels wide
    through the middle, vertical or horizontal: the classic edge-detection example.

    Examples:
        >>> demo_image()[0].tolist()
        [0, 0, 0, 255, 255, 255, 0, 0, 0]
    """
    img = np.zeros((size, size), dtype=np.uint8)
    start = (size - bar) // 2
    if orientation == "vertical":
        img[:, start:start + bar] = 255
    elif orientation == "horizontal":
        img[start:start + bar, :] = 255
    else:
        raise SpecError(f"orientation must be vertical or horizontal, got {orientation!r}", param="orientation")
    return img


# --------------------------------------------------------------------------- arithmetic


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise SpecError(f"{name} must be a positive integer, got {value!r}", param=name)
    return int(value)


def _check_padding(padding: Padding) -> Padding:
    if isinstance(padding, str):
        p = padding.strip().lower()
        if p in ("valid", "same"):
            return p
        if p.isdigit():
            return int(p)
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        return int(padding)
    raise SpecError(f"padding must be valid, same or a non-negative integer, got {padding!r}", param="padding")


def same_padding(n: int, k: int, stride: int = 1) -> tuple[int, int]:
    """``(before, after)`` zero padding for TensorFlow-style ``same``: the output has
    ``ceil(n / stride)`` pixels and any odd extra pixel goes after (bottom/right).

    Examples:
        >>> same_padding(9, 3), same_padding(9, 2), same_padding(9, 4)
        ((1, 1), (0, 1), (1, 2))
    """
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def conv_output_size(n: int, k: int, stride: int = 1, padding: Padding = "valid") -> int:
    """Output length of a convolution along one axis.

    ``valid``: ``floor((n - k) / stride) + 1``; an integer ``p``:
    ``floor((n + 2p - k) / stride) + 1``; ``same``: ``ceil(n / stride)``.

    Examples:
        >>> conv_output_size(9, 3), conv_output_size(9, 3, 2), conv_output_size(9, 4, padding="same")
        (7, 4, 9)
        >>> conv_output_size(224, 7, stride=2, padding=3)
        112
    """
    n, k = _check_positive(n, "n"), _check_positive(k, "k")
    stride, padding = _check_positive(stride, "stride"), _check_padding(padding)
    if padding == "same":
        return -(-n // stride)
    pad = 0 if padding == "valid" else padding
    if k > n + 2 * pad:
        raise SpecError(f"k={k} is larger than the padded length {n + 2 * pad}", param="k")
    return (n + 2 * pad - k) // stride + 1


def pool_output_size(n: int, size: int, stride: int | None = None) -> int:
    """Output length of max/average pooling along one axis (no padding, floor):
    ``floor((n - size) / stride) + 1`` with ``stride`` defaulting to ``size``.

    Examples:
        >>> pool_output_size(7, 2), pool_output_size(8, 2), pool_output_size(7, 3, 1)
        (3, 4, 5)
    """
    n, size = _check_positive(n, "n"), _check_positive(size, "size")
    stride = size if stride is None else _check_positive(stride, "stride")
    if size > n:
        raise SpecError(f"size {size} is larger than the length n={n} it would pool", param="size")
    return (n - size) // stride + 1


# --------------------------------------------------------------------------- planning


def _fmt(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}"


@dataclass(frozen=True)
class Settings:
    """Validated, normalised pipeline settings (see :func:`check_settings`)."""

    color: str = "gray"
    stride: int = 1
    padding: Padding = "valid"
    repeat: int = 1
    pool: str | None = None
    pool_size: int = 2
    pool_stride: int = 2


def check_settings(*, color: str = "gray", stride: int = 1, padding: Padding = "valid",
                   repeat: int = 1, pool: str | None = None, pool_size: int = 2,
                   pool_stride: int | None = None) -> Settings:
    """Validate every scalar argument; a bad one raises :class:`SpecError` naming it.

    Examples:
        >>> check_settings(padding="SAME", pool="average").pool
        'avg'
    """
    o = check_options(KernelOptions, color=color, stride=stride, padding=padding, repeat=repeat, pool=pool,
                      pool_size=pool_size, pool_stride=pool_stride)
    return Settings(color=o.color, stride=o.stride, padding=o.padding, repeat=o.repeat, pool=o.pool,
                    pool_size=o.pool_size, pool_stride=o.pool_size if o.pool_stride is None else o.pool_stride)


@dataclass(frozen=True)
class StagePlan:
    """One step of the pipeline before it runs: what it does, its shapes and arithmetic."""

    label: str
    op: str  # "conv", "max" or "avg"
    in_shape: tuple[int, int]
    out_shape: tuple[int, int]
    arithmetic: str
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom

    @property
    def kind(self) -> str:
        """``"conv"`` or ``"pool"``."""
        return "conv" if self.op == "conv" else "pool"


def _padding_words(padding: Padding) -> str:
    return padding if isinstance(padding, str) else f"pad {padding}"


def _conv_step(shape: tuple[int, int], kshape: tuple[int, int], cfg: Settings,
               step: int) -> StagePlan:
    if cfg.padding == "same":
        top, bottom = same_padding(shape[0], kshape[0], cfg.stride)
        left, right = same_padding(shape[1], kshape[1], cfg.stride)
    else:
        top = bottom = left = right = 0 if cfg.padding == "valid" else int(cfg.padding)
    padded = (shape[0] + top + bottom, shape[1] + left + right)
    if kshape[0] > padded[0] or kshape[1] > padded[1]:
        what = f"a {_fmt(kshape)} kernel to a {_fmt(shape)} image ({_padding_words(cfg.padding)} padding)"
        if step > 1:
            raise SpecError(f"repeat {cfg.repeat}: step {step} would apply {what}; "
                            f"at most {step - 1} repeats fit", param="repeat")
        raise SpecError(f"kernel {_fmt(kshape)} does not fit a {_fmt(shape)} image "
                        f"({_padding_words(cfg.padding)} padding): it is larger than the image "
                        "(use same padding or a smaller one)", param="kernel")
    out = (conv_output_size(padded[0], kshape[0], cfg.stride),
           conv_output_size(padded[1], kshape[1], cfg.stride))
    arith = (f"{_fmt(shape)} * {_fmt(kshape)} ({_padding_words(cfg.padding)}, "
             f"stride {cfg.stride}) -> {_fmt(out)}")
    return StagePlan(f"conv {step}", "conv", shape, out, arith, (left, right, top, bottom))


def _pool_step(shape: tuple[int, int], cfg: Settings) -> StagePlan:
    size, stride = cfg.pool_size, cfg.pool_stride
    if size > shape[0] or size > shape[1]:
        raise SpecError(f"pool_size {size} is larger than the {_fmt(shape)} output it would pool",
                        param="pool_size")
    out = (pool_output_size(shape[0], size, stride), pool_output_size(shape[1], size, stride))
    label = f"{cfg.pool} pool {size}x{size}" + (f" stride {stride}" if stride != size else "")
    arith = f"{_fmt(shape)} {cfg.pool} pool {size}x{size} (stride {stride}) -> {_fmt(out)}"
    return StagePlan(label, cfg.pool, shape, out, arith)


def plan_stages(input_shape: tuple[int, int], kernel_shape: tuple[int, int], channels: int = 1,
                **settings: Any) -> list[StagePlan]:
    """Work out each stage's shape (and validate everything) without computing anything.

    ``settings`` are :func:`apply_kernel`'s keyword arguments (or ``cfg=Settings(...)``);
    ``channels`` (1 gray, 3 rgb) counts in the budget :func:`check_budget` holds the plan to.

    Examples:
        >>> [p.out_shape for p in plan_stages((9, 9), (3, 3), repeat=3)]
        [(7, 7), (5, 5), (3, 3)]
        >>> plan_stages((7, 7), (3, 3), padding="same", pool="max")[-1].arithmetic
        '7x7 max pool 2x2 (stride 2) -> 3x3'
    """
    cfg = settings.pop("cfg", None) or check_settings(**settings)
    shape = (int(input_shape[0]), int(input_shape[1]))
    kshape = (int(kernel_shape[0]), int(kernel_shape[1]))
    check_side(shape)
    plans: list[StagePlan] = []
    for step in range(1, cfg.repeat + 1):
        plans.append(_conv_step(shape, kshape, cfg, step))
        shape = plans[-1].out_shape
    if cfg.pool is not None:
        plans.append(_pool_step(shape, cfg))
    check_budget(plans, kshape, channels)
    return plans


def check_budget(plans: Sequence[StagePlan], kernel_shape: tuple[int, int], channels: int = 1) -> None:
    """Refuse, before anything is computed, a pipeline whose stages would hold more than
    :data:`~convlens.options.MAX_LAB_VALUES` float32 values or whose convolutions would take more than
    :data:`~convlens.options.MAX_LAB_MACS` multiply-adds (a large padding, many repeats of a large image)."""
    values = macs = 0
    for p in plans:
        (h, w), (oh, ow) = p.in_shape, p.out_shape
        if p.kind == "conv":
            left, right, top, bottom = p.pads
            values += (h + top + bottom) * (w + left + right)  # the padded copy
            macs += oh * ow * kernel_shape[0] * kernel_shape[1]
        values += oh * ow
    values, macs = values * channels, macs * channels
    if values > MAX_LAB_VALUES or macs > MAX_LAB_MACS:
        what = (f"{values * 4 / 2**20:.0f} MiB of stages" if values > MAX_LAB_VALUES
                else f"{macs / 1e9:.1f} billion multiply-adds")
        convs = [p for p in plans if p.kind == "conv"]
        param = "repeat" if len(convs) > 1 else "padding" if any(convs[0].pads) else "image"
        raise SpecError(f"{param}: this pipeline would need {what} (at most {MAX_LAB_VALUES * 4 >> 20} MiB and "
                        f"{MAX_LAB_MACS / 1e9:.1f} billion); use fewer repeats, less padding or a smaller image",
                        param=param)


def check_side(shape: Sequence[int], what: str = "image") -> None:
    """Refuse an image (h, w) with a side over :data:`~convlens.options.MAX_IMAGE_SIDE` pixels."""
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) > MAX_IMAGE_SIDE:
        raise SpecError(f"{what}: {w}x{h} is too large for the kernels lab (at most {MAX_IMAGE_SIDE} pixels a side; "
                        "resize it first)", param="image")


# --------------------------------------------------------------------------- results


@dataclass
class Stage:
    """One computed stage of the kernels lab.

    Attributes:
        label: what the stage did (``"conv 1"``, ``"max pool 2x2"``).
        tensor: ``(C, h, w)`` float32, the stage's output.
        shape: ``(h, w)``.
        kind: ``"conv"`` or ``"pool"``.
        arithmetic: how the shape was computed (``"9x9 * 3x3 (valid, stride 1) -> 7x7"``).
    """

    label: str
    tensor: torch.Tensor
    shape: tuple[int, int]
    kind: str = "conv"
    arithmetic: str = ""

    def stats(self) -> dict[str, float]:
        """Min, max, mean and energy (sum of squares) of the stage's values."""
        t = self.tensor.double()
        return {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean()),
                "energy": float((t * t).sum())}


@dataclass
class KernelResult(View):
    """What :func:`apply_kernel` returns: the input, the kernel and every stage.

    Attributes:
        input: ``(C, H, W)`` float32, the image as convolved (pixels in [0, 1] or numbers).
        kernel_name: the kernel's canonical name, ``"custom"`` for a matrix.
        kernel: the 2-D float64 matrix.
        stages: every convolution and pooling stage, in order (the input is ``input``).
        settings: the checked settings (colour, stride, padding, repeats, pooling).
        values: ``"pixels"`` (an image read as 0..1) or ``"numbers"`` (an array convolved as it is).

    Examples:
        >>> r = apply_kernel(demo_image(), "vertical", pool="max")
        >>> r.shapes, r.stages[-1].label
        ([(9, 9), (7, 7), (3, 3)], 'max pool 2x2')
    """

    input: torch.Tensor
    kernel_name: str
    kernel: np.ndarray
    stages: list[Stage]
    settings: Settings = field(default_factory=Settings)
    source: str | None = field(default=None, repr=False)
    #: ``"pixels"`` (an image read as 0..1) or ``"numbers"`` (an array convolved as it is)
    values: str = "pixels"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(h, w)`` of the input and then of every stage."""
        return [tuple(self.input.shape[-2:])] + [s.shape for s in self.stages]

    @property
    def output(self) -> torch.Tensor:
        """The last stage's tensor ``(C, h, w)``."""
        return self.stages[-1].tensor

    def energy(self, stage: int = -1) -> float:
        """Sum of squared values of one stage (default: the last); 0 means no response."""
        return self.stages[stage].stats()["energy"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary: kernel, settings, shapes, arithmetic, stage statistics (pure)."""
        kh, kw = self.kernel.shape
        cfg = self.settings
        out: dict[str, Any] = {
            "kernel": {"name": self.kernel_name, "size": [kh, kw], "matrix": self.kernel.tolist()},
            "color": cfg.color,
            "channels": int(self.input.shape[0]),
            "stride": cfg.stride,
            "padding": cfg.padding,
            "repeat": cfg.repeat,
            "pool": None if cfg.pool is None else {
                "type": cfg.pool, "size": cfg.pool_size, "stride": cfg.pool_stride},
            "input": {"shape": list(self.shapes[0]), "values": self.values,
                      "min": float(self.input.min()), "max": float(self.input.max())},
            "stages": [{"label": s.label, "kind": s.kind, "shape": list(s.shape),
                        "arithmetic": s.arithmetic, **s.stats()} for s in self.stages],
            "shapes": [list(s) for s in self.shapes],
            "arithmetic": [s.arithmetic for s in self.stages],
        }
        if self.source is not None:
            out["image"] = self.source
        return out

    def title(self) -> str:
        """The figure's title: kernel, padding, stride and the chain of shapes."""
        cfg = self.settings
        pad = cfg.padding if isinstance(cfg.padding, str) else f"pad {cfg.padding}"
        chain = " → ".join(f"{h}x{w}" for h, w in self.shapes)
        return f"{self.kernel_name} kernel, {pad} padding, stride {cfg.stride}:  {chain}"

    def figure(self, **_opts: Any) -> Image.Image:
        """The side-by-side picture: input | kernel | every stage, shapes in the titles."""
        return render_kernels(self.input.numpy(), self.kernel, self.kernel_name,
                              [(s.label, s.tensor.numpy()) for s in self.stages], title=self.title(),
                              input_pixels=self.values == "pixels")

    def save(self, out_dir: str | Path, **_opts: Any) -> Saved:
        """Write ``kernels.png`` (role ``figure``), ``kernel.npy`` (``kernel``) and one
        ``NN_label.npy`` per stage (``stage``, ``(C, h, w)`` float32) under ``out_dir``,
        each atomically; one record per stage names its file."""
        out = OutDir(out_dir)
        out.png("figure", "kernels.png", self.figure())
        out.npy("kernel", "kernel.npy", self.kernel)
        for i, stage in enumerate(self.stages, start=1):
            path = out.npy("stage", f"{i:02d}_{stage_key(stage.label)}.npy", stage.tensor.numpy())
            out.record(stage=stage.label, key=stage_key(stage.label), file=str(path))
        return out.saved()


def stage_key(label: str) -> str:
    """A stage label as a file-name key: ``"max pool 2x2"`` -> ``"max_pool_2x2"``."""
    return safe_stem(label.lower(), "stage")


@dataclass
class KernelGallery(View):
    """Several kernels on one image (what :func:`apply_kernels` returns): one row per kernel
    in one figure, ``results`` the :class:`KernelResult` of each."""

    results: list[KernelResult]

    @property
    def keys(self) -> list[str]:
        """A distinct file-name key per kernel: its name, ``custom_2`` for a second custom one."""
        out: list[str] = []
        for r in self.results:
            base = stage_key(r.kernel_name)
            key, n = base, 1
            while key in out:
                n += 1
                key = f"{base}_{n}"
            out.append(key)
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"kernels": [each result's to_dict() with its "key"], "input": ...}`` (pure)."""
        rows = [{"key": k, **r.to_dict()} for k, r in zip(self.keys, self.results)]
        return {"kernels": rows, "input": rows[0]["input"], "image": self.results[0].source}

    def figure(self, **_opts: Any) -> Image.Image:
        first = self.results[0]
        rows = [(r.kernel_name, r.kernel, [(s.label, s.tensor.numpy()) for s in r.stages]) for r in self.results]
        chain = " → ".join(f"{h}x{w}" for h, w in first.shapes)
        cfg = first.settings
        pad = cfg.padding if isinstance(cfg.padding, str) else f"pad {cfg.padding}"
        return render_kernel_gallery(first.input.numpy(), rows, input_pixels=first.values == "pixels",
                                     title=f"{len(rows)} kernels, {pad} padding, stride {cfg.stride}:  {chain}")

    def save(self, out_dir: str | Path, **_opts: Any) -> Saved:
        """Write ``kernels.png`` (role ``figure``), then per kernel ``KEY_kernel.npy``
        (``kernel``) and ``KEY_NN_label.npy`` per stage (``stage``); one record per stage."""
        out = OutDir(out_dir)
        out.png("figure", "kernels.png", self.figure())
        for key, r in zip(self.keys, self.results):
            out.npy("kernel", f"{key}_kernel.npy", r.kernel)
            for i, stage in enumerate(r.stages, start=1):
                path = out.npy("stage", f"{key}_{i:02d}_{stage_key(stage.label)}.npy", stage.tensor.numpy())
                out.record(kernel=r.kernel_name, key=f"{key}_{stage_key(stage.label)}", stage=stage.label,
                           file=str(path))
        return out.saved()


# --------------------------------------------------------------------------- compute


#: luminance weights for a 3-channel array of numbers seen in gray (ITU-R 601-2, as PIL's "L")
LUMA = (0.299, 0.587, 0.114)


def is_numbers(image: Any) -> bool:
    """Whether ``image`` is an array of numbers (convolved as it is) rather than pixels:
    a NumPy array or tensor of any dtype but ``uint8``."""
    if isinstance(image, torch.Tensor):
        return image.dtype != torch.uint8
    return isinstance(image, np.ndarray) and image.dtype != np.uint8


def _numbers_tensor(image: "np.ndarray | torch.Tensor", color: str) -> torch.Tensor:
    """An array of numbers as ``(C, H, W)`` float32, values unchanged.

    NumPy: ``(H, W)`` or ``(H, W, C)``; a tensor: ``(H, W)`` or ``(C, H, W)``. Gray takes the
    luminance of three channels; rgb repeats one channel three times.
    """
    shape = tuple(image.shape)
    if len(shape) in (2, 3):
        check_side(shape[1:] if isinstance(image, torch.Tensor) and len(shape) == 3 else shape[:2])
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().double().numpy()
        if arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
    else:
        arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
        raise SpecError(f"image: an array of numbers must be HxW or HxWx3 (a tensor HxW or 3xHxW), "
                        f"got shape {tuple(np.shape(image))}", param="image")
    if not np.isfinite(arr).all():
        raise SpecError("image: the array has NaN or infinite values", param="image")
    if arr.ndim == 3:
        arr = arr[..., :3]
        if color == "gray":
            arr = arr @ np.array(LUMA)
    elif color == "rgb":
        arr = np.repeat(arr[..., None], 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def read_matrix(path: "str | Path") -> np.ndarray:
    """A matrix of numbers from a ``.npy`` file or a ``.csv``/``.txt`` file (commas, semicolons,
    tabs or spaces between values), as float64.

    The kernels lab takes it as an image (convolved as it is) or as a kernel.

    Args:
        path: the file.

    Returns:
        np.ndarray: the matrix, float64.

    Raises:
        SpecError: a missing or unreadable file, a file too large, or content that is not a
            matrix of numbers.
    """
    p = Path(path)
    if not os.path.isfile(p):  # (False, not OSError, for a name too long)
        raise SpecError(f"{p}: no such file", param="path")
    if p.suffix.lower() == ".npy":
        try:  # mapped, not read: the shape is checked before the values are
            arr = np.load(p, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise SpecError(f"{p}: not a NumPy .npy array ({str(exc).splitlines()[0][:120]})", param="path") from None
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise SpecError(f"{p}: holds {arr.dtype} values, not numbers", param="path")
        if arr.ndim > 3 or any(n > MAX_IMAGE_SIDE for n in arr.shape[:2]) or arr.size > MAX_IMAGE_SIDE ** 2 * 4:
            raise SpecError(f"{p}: an array of shape {tuple(arr.shape)} is too large (at most {MAX_IMAGE_SIDE} "
                            "a side)", param="path")
        return np.array(arr, dtype=np.float64)
    if p.stat().st_size > MAX_MATRIX_TEXT:
        raise SpecError(f"{p}: {p.stat().st_size} bytes is too large for a matrix of numbers as text "
                        f"(at most {MAX_MATRIX_TEXT >> 20} MiB; save it as .npy)", param="path")
    text = p.read_text(encoding="utf-8", errors="replace").strip()
    rows = [r for r in (line.strip() for line in text.splitlines()) if r and not r.startswith("#")]
    if not rows:
        raise SpecError(f"{p}: holds no numbers", param="path")
    matrix = []
    for r, line in enumerate(rows, start=1):
        cells = [c for c in re.split(r"[,;\t ]+", line.strip(",; \t")) if c]
        try:
            values = [float(Fraction(c)) if "/" in c else float(c) for c in cells]
        except (ValueError, ZeroDivisionError):
            bad = next(c for c in cells if not _is_number(c))
            raise SpecError(f"{p}: line {r}: {_short(bad, 16)} is not a number", param="path") from None
        if matrix and len(values) != len(matrix[0]):
            raise SpecError(f"{p}: ragged rows: line {r} has {_entries(len(values))} but line 1 has "
                            f"{_entries(len(matrix[0]))}", param="path")
        matrix.append(values)
    return np.array(matrix, dtype=np.float64)


def _read_image_matrix(path: "str | Path") -> np.ndarray:
    try:
        return read_matrix(path)
    except SpecError as exc:
        raise SpecError(f"image {exc}", param="image") from None


def _is_number(text: str) -> bool:
    try:
        float(Fraction(text)) if "/" in text else float(text)
        return True
    except (ValueError, ZeroDivisionError):
        return False


def _to_tensor(image: ImageSource, color: str) -> torch.Tensor:
    if is_numbers(image):
        return _numbers_tensor(image, color)  # type: ignore[arg-type]
    pil = load_image(image, mode="L" if color == "gray" else "RGB", max_pixels=MAX_IMAGE_SIDE * MAX_IMAGE_SIDE)
    check_side((pil.height, pil.width))
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _conv(x: torch.Tensor, weight: torch.Tensor, plan: StagePlan, stride: int) -> torch.Tensor:
    """One depthwise convolution of ``x`` (C, H, W) with ``weight`` (C, 1, kh, kw)."""
    if any(plan.pads):
        x = F.pad(x, plan.pads)  # zeros, like Keras/TensorFlow 'same'
    return F.conv2d(x[None], weight, stride=stride, groups=x.shape[0])[0]


def _pool(x: torch.Tensor, plan: StagePlan, cfg: Settings) -> torch.Tensor:
    fn = F.max_pool2d if plan.op == "max" else F.avg_pool2d
    return fn(x[None], kernel_size=cfg.pool_size, stride=cfg.pool_stride)[0]


def apply_kernel(image: ImageSource, kernel: KernelSpec, *, color: str = "gray", stride: int = 1,
                 padding: Padding = "valid", repeat: int = 1, pool: str | None = None,
                 pool_size: int = 2, pool_stride: int | None = None) -> KernelResult:
    """Convolve ``image`` with ``kernel`` ``repeat`` times, then optionally pool once.

    Every stage keeps its tensor, its shape and the arithmetic that produced the shape, so the
    result shows what a CNN layer computes and why the map shrinks. Convolution is what CNN layers
    compute (cross-correlation: the kernel is not flipped).

    Args:
        image: anything :func:`convlens.images.load_image` reads (a file, a PIL image, a ``uint8``
            array), as pixels in [0, 1]; or numbers: an array of any other dtype (``(H, W)``,
            ``(H, W, 3)``; a tensor ``(C, H, W)``) or a ``.npy``/``.csv``/``.txt`` file, convolved
            exactly as it is, so a hand computation gives the same values.
        kernel: a name from :func:`kernel_names` or a matrix (see :func:`parse_kernel`).
        color: ``"gray"`` (one channel) or ``"rgb"`` (the kernel on each channel separately).
        stride: the step of the kernel, in pixels.
        padding: ``"valid"`` (none), ``"same"`` (TensorFlow's: output ``ceil(n / stride)``, the
            extra pad bottom/right for even kernels) or a number of zero pixels on every side.
        repeat: how many times the kernel is applied, each time to the previous output.
        pool: ``None``, ``"max"`` or ``"avg"``, applied once after the convolutions.
        pool_size: the pooling window's side.
        pool_stride: the pooling step (default: ``pool_size``).

    Returns:
        KernelResult: a view of the input, every stage's output and shape, and the arithmetic.

    Raises:
        SpecError: a malformed kernel or setting, an image or kernel too large for the lab, a
            kernel larger than the (padded) image, or values that overflow float32; the message
            names the argument.
        ImageError: an image file that cannot be read.

    Examples:
        >>> r = apply_kernel(demo_image(), "1,0,-1;1,0,-1;1,0,-1", stride=2)
        >>> r.shapes, r.output.shape
        ([(9, 9), (4, 4)], torch.Size([1, 4, 4]))
    """
    name, matrix = parse_kernel(kernel)
    source = str(image) if isinstance(image, (str, Path)) else None
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in MATRIX_SUFFIXES:
        image = _read_image_matrix(image)  # numbers, convolved as they are
    cfg = check_settings(color=color, stride=stride, padding=padding, repeat=repeat, pool=pool,
                         pool_size=pool_size, pool_stride=pool_stride)
    x = _to_tensor(image, cfg.color)
    plans = plan_stages(tuple(x.shape[-2:]), matrix.shape, int(x.shape[0]), cfg=cfg)
    weight = torch.from_numpy(matrix.astype(np.float32))[None, None].repeat(x.shape[0], 1, 1, 1)
    stages: list[Stage] = []
    current = x
    with torch.no_grad():
        for plan in plans:
            if plan.kind == "conv":
                current = _conv(current, weight, plan, cfg.stride)
            else:
                current = _pool(current, plan, cfg)
            if not bool(torch.isfinite(current).all()):  # e.g. 1e30 entries convolved twice
                raise SpecError(f"kernel: {plan.label} overflows float32 (values beyond 3.4e38); "
                                "use smaller kernel entries or fewer repeats", param="kernel")
            stages.append(Stage(plan.label, current.contiguous(), plan.out_shape, plan.kind,
                                plan.arithmetic))
    return KernelResult(
        input=x, kernel_name=name, kernel=matrix, stages=stages, settings=cfg,
        source=source,
        values="numbers" if is_numbers(image) else "pixels")


def apply_kernels(image: ImageSource, kernels: Sequence[KernelSpec], **settings: Any) -> "KernelResult | KernelGallery":
    """Each of ``kernels`` on one image with the same settings, to compare kernels side by side.

    The image is read once for all kernels.

    Args:
        image: as :func:`apply_kernel` takes it.
        kernels: kernel names or matrices (one name or matrix is one kernel).
        **settings: :func:`apply_kernel`'s keyword arguments (``color``, ``stride``, ``padding``...).

    Returns:
        KernelResult | KernelGallery: the :class:`KernelResult` of a single kernel, or a
            :class:`KernelGallery` of several (one figure).

    Raises:
        SpecError: no kernel, or what :func:`apply_kernel` raises for any of them.
    """
    specs = [kernels] if isinstance(kernels, (str, Path, np.ndarray, torch.Tensor)) else list(kernels)
    if not specs:
        raise SpecError("kernel: give at least one kernel", param="kernel")
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in MATRIX_SUFFIXES:
        source, image = str(image), _read_image_matrix(image)  # read once for all kernels
    else:
        source = str(image) if isinstance(image, (str, Path)) else None
    results = [apply_kernel(image, k, **settings) for k in specs]
    for r in results:
        r.source = source
    return results[0] if len(results) == 1 else KernelGallery(results)


__all__ = [
    "KERNELS", "KernelGallery", "KernelResult", "apply_kernels", "Settings", "Stage", "StagePlan", "apply_kernel", "stage_key",
    "check_budget", "check_settings", "check_side", "conv_output_size", "demo_image", "is_numbers", "kernel_names",
    "parse_kernel",
    "plan_stages", "pool_output_size", "read_matrix", "same_padding",
]
