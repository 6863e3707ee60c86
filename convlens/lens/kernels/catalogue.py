"""The named kernels of the lab and the demo image they are tried on.

Every matrix follows the cross-correlation convention of CNN layers (the kernel is not flipped),
and is read-only; :func:`~convlens.lens.kernels.parse.parse_kernel` resolves a name through
:func:`canonical_name`.
"""

from __future__ import annotations

import re

import numpy as np

from ...errors import SpecError


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

#: Alternative spellings -> the canonical name they stand for.
ALIASES: dict[str, str] = {
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
    **{alias: _CANONICAL[target] for alias, target in ALIASES.items()},
}


def _norm(name: str) -> str:
    """Spelling-insensitive key: 'Sobel_X', 'sobel x' and 'sobelx' all match 'sobel-x'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY: dict[str, str] = {
    _norm(name): ALIASES.get(name, name) for name in KERNELS
}


def canonical_name(name: str) -> str | None:
    """The canonical kernel name that ``name`` spells, ignoring case, ``_``, ``-`` and spaces.

    Args:
        name: a kernel name or alias, spelt loosely (``"Sobel X"``, ``"sobel_x"``).

    Returns:
        str | None: the canonical name (one that :func:`kernel_names` lists), or None for an unknown name.

    Examples:
        >>> canonical_name("Sobel X"), canonical_name("blur"), canonical_name("nope")
        ('sobel-x', 'box-blur', None)
    """
    return _BY_KEY.get(_norm(name))


def kernel_names(aliases: bool = False) -> list[str]:
    """The named kernels, canonical names first (and then the aliases if asked).

    Args:
        aliases: also list the alternative spellings (``"blur"`` for ``"box-blur"``...) after the
            canonical names.

    Returns:
        list[str]: the names, in the catalogue's order; :func:`~convlens.lens.kernels.apply_kernel`
            accepts any of them.

    Examples:
        >>> kernel_names()[:3]
        ['identity', 'vertical-edge', 'horizontal-edge']
        >>> "blur" in kernel_names(aliases=True)
        True
    """
    names = list(_CANONICAL)
    return names + list(ALIASES) if aliases else names


def demo_image(size: int = 9, bar: int = 3, orientation: str = "vertical") -> np.ndarray:
    """A small black ``size``x``size`` uint8 image with a white bar ``bar`` pixels wide
    through the middle, vertical or horizontal: the classic edge-detection example.

    Args:
        size: the image's side, in pixels.
        bar: the white bar's width, in pixels.
        orientation: ``"vertical"`` or ``"horizontal"``, the direction of the bar.

    Returns:
        np.ndarray: the ``(size, size)`` uint8 image, 0 (black) and 255 (white).

    Raises:
        SpecError: an orientation other than vertical or horizontal.

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
