"""The one result contract every view result follows (journey, explanation, kernels lab,
feature visualisation, filters, dataset examples, evaluation...).

- ``figure(**opts)`` -> a PIL image, drawn with :mod:`convlens.render`;
- ``to_dict()`` -> a JSON-ready dict, pure: the same before and after ``save``;
- ``save(out_dir, **opts)`` -> one :class:`~convlens.render.files.Saved` (the directory and its
  files by role), every file written atomically;
- ``_repr_png_`` (Jupyter shows the figure) and, where a table reads better, ``_repr_html_``.

A new result subclasses :class:`View` and implements the three methods; the contract test
(``tests/test_view_contract.py``) checks every result the library returns.
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from .render.files import OutDir, Saved, png_bytes

__all__ = ["OutDir", "Saved", "View"]


class View:
    """Base class of every view result (see the module docstring)."""

    def figure(self, **opts: Any) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.figure")

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.to_dict")

    def save(self, out_dir: str | os.PathLike, **opts: Any) -> Saved:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.save")

    def _repr_png_(self) -> bytes:
        return png_bytes(self.figure())
