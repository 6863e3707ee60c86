"""Reading a kernel or a matrix of numbers: names, matrix strings, nested lists, arrays and files.

A matrix string has rows split by ``;`` or newlines and entries by ``,`` or spaces (fractions like
``1/9`` are fine, as is JSON ``"[[1,0],[0,-1]]"``); ``.npy``, ``.csv`` and ``.txt`` files are read
as numbers (:func:`read_matrix`). Every malformed input is one :class:`~convlens.errors.SpecError`
naming the argument and saying what is wrong (which row, which entry).
"""

from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from ...errors import SpecError, closest
from ...options import MAX_IMAGE_SIDE, MAX_KERNEL_SIDE
from ...render.files import safe_stem
from .catalogue import KERNELS, canonical_name, kernel_names

KernelSpec = Union[str, Path, Sequence[Sequence[float]], Sequence[float], np.ndarray, torch.Tensor]

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
    name = canonical_name(s)
    if name is not None:
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
    return _read_npy(p) if p.suffix.lower() == ".npy" else _read_text_matrix(p)


def _read_npy(p: Path) -> np.ndarray:
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


def _read_text_matrix(p: Path) -> np.ndarray:
    """Numbers separated by commas, semicolons, tabs or spaces; ``#`` lines are comments."""
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


def _is_number(text: str) -> bool:
    try:
        float(Fraction(text)) if "/" in text else float(text)
        return True
    except (ValueError, ZeroDivisionError):
        return False

