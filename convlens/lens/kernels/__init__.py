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

The package holds the named kernels (``catalogue``), reading a kernel or a matrix (``parse``),
the shape arithmetic and stage planning (``arithmetic``), the results (``result``) and the
computation (``apply``); every name is importable from ``convlens.lens.kernels`` (and from
``convlens.kernels``, the same module object).

Examples:
    >>> from convlens.lens.kernels import apply_kernel, demo_image
    >>> result = apply_kernel(demo_image(), "vertical-edge", repeat=3)
    >>> result.shapes
    [(9, 9), (7, 7), (5, 5), (3, 3)]
    >>> result.to_dict()["arithmetic"][0]
    '9x9 * 3x3 (valid, stride 1) -> 7x7'
"""

from __future__ import annotations

from . import catalogue
from .apply import LUMA, apply_kernel, apply_kernels, is_numbers
from .arithmetic import (
    Padding,
    Settings,
    StagePlan,
    check_budget,
    check_settings,
    check_side,
    conv_output_size,
    plan_stages,
    pool_output_size,
    same_padding,
)
from .catalogue import KERNELS, demo_image, kernel_names
from .parse import MATRIX_SUFFIXES, MAX_MATRIX_TEXT, KernelSpec, parse_kernel, read_matrix
from .result import KernelGallery, KernelResult, Stage, stage_key

_ALIASES = catalogue.ALIASES  # the alternative spellings, under the name older code reads

__all__ = [
    "KERNELS", "KernelGallery", "KernelResult", "apply_kernels", "Settings", "Stage", "StagePlan", "apply_kernel",
    "stage_key", "check_budget", "check_settings", "check_side", "conv_output_size", "demo_image", "is_numbers",
    "kernel_names", "parse_kernel", "plan_stages", "pool_output_size", "read_matrix", "same_padding",
    # public names of the module before it became a package (issue 31), kept importable
    "KernelSpec", "LUMA", "MATRIX_SUFFIXES", "MAX_MATRIX_TEXT", "Padding",
]
