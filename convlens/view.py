"""The one result contract every view result follows (journey, explanation, kernels lab,
feature visualisation, filters, dataset examples, evaluation...).

- ``figure(**opts)`` -> a PIL image, drawn with :mod:`convlens.render`;
- ``to_dict()`` -> a JSON-ready dict, pure: the same before and after ``save``;
- ``save(out_dir, **opts)`` -> one :class:`~convlens.render.files.Saved` (the directory and its
  files by role), every file written atomically;
- ``_repr_png_`` (Jupyter shows the figure) and, where a table reads better, ``_repr_html_``
  built with :func:`html_table` (also used by results that are tables without a figure: the
  layer table, a prediction).

A new result subclasses :class:`View` and implements the three methods; the contract test
(``tests/test_view_contract.py``) checks every result the library returns.
"""

from __future__ import annotations

import html
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image

from .render.files import OutDir, Saved, png_bytes

__all__ = ["OutDir", "Saved", "View", "html_table"]


class View:
    """Base class of every view result: draw it, serialise it, save it, show it in Jupyter.

    One contract for every result lets the CLI (``--json`` prints :meth:`to_dict`), the web
    explorer and the HTML reports treat all of them alike. A subclass implements the three
    methods below; ``_repr_png_`` (Jupyter) comes from :meth:`figure`.
    """

    def figure(self, **opts: Any) -> Image.Image:  # pragma: no cover - abstract
        """Draw the result.

        Args:
            **opts: drawing options of the subclass (a colour map, a tile size...).

        Returns:
            Image.Image: the figure, drawn with :mod:`convlens.render`.
        """
        raise NotImplementedError(f"{type(self).__name__}.figure")

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The result as JSON-ready data (no tensors, no paths to temporary files).

        Returns:
            dict[str, Any]: the same before and after :meth:`save` (a pure function of the result).
        """
        raise NotImplementedError(f"{type(self).__name__}.to_dict")

    def save(self, out_dir: str | os.PathLike, **opts: Any) -> Saved:  # pragma: no cover - abstract
        """Write the result's files (figures, JSON, CSV) into ``out_dir``, each atomically.

        Args:
            out_dir: the directory, created if missing.
            **opts: drawing options passed on to the figures.

        Returns:
            Saved: the directory and its files by role (``figure``, ``json``...).
        """
        raise NotImplementedError(f"{type(self).__name__}.save")

    def _repr_png_(self) -> bytes:
        return png_bytes(self.figure())


def _cell(value: Any) -> tuple[str, bool]:
    """A cell's escaped text and whether it is a number (numbers are right-aligned, with thousands
    separators for integers)."""
    if isinstance(value, bool) or value is None:
        return html.escape("" if value is None else str(value)), False
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}", True
    if isinstance(value, numbers.Real):
        return html.escape(f"{float(value):.4g}"), True
    return html.escape(str(value)), False


def html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None,
               footer: Sequence[str] = (), indent: Sequence[int] | None = None) -> str:
    """An HTML table for a notebook's ``_repr_html_``: every value escaped, numbers right-aligned
    (integers with thousands separators, floats to 4 significant digits; format a value to a
    string first to show it otherwise).

    Args:
        columns: the column headings.
        rows: the rows, one value per column.
        caption: a line above the table.
        footer: lines below it (totals, notes).
        indent: a nesting depth per row, shown as a left padding of the first cell (the layer
            table's module tree).

    Returns:
        str: one ``<div>`` holding the caption, the table and the footer.

    Examples:
        >>> table = html_table(["layer", "params"], [["conv<1>", 1234]])
        >>> '<td style="text-align:left">conv&lt;1&gt;</td>' in table    # escaped, left-aligned
        True
        >>> '<td style="text-align:right">1,234</td>' in table            # a number: right-aligned
        True
    """
    head = "".join(f'<th style="text-align:left">{html.escape(str(c))}</th>' for c in columns)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            text, is_number = _cell(value)
            style = "text-align:right" if is_number else "text-align:left"
            if j == 0 and indent is not None and indent[i]:
                style += f";padding-left:{0.5 + 1.2 * int(indent[i]):.1f}em"
            cells.append(f'<td style="{style}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    top = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
    bottom = "".join(f"<p>{html.escape(line)}</p>" for line in footer)
    return (f"<div>{top}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"{bottom}</div>")
