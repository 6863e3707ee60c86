"""Remove outputs and execution counts from notebooks, so that git holds the lessons only.

    .venv/bin/python docs/notebooks/strip_outputs.py               # every docs/notebooks/*.ipynb
    .venv/bin/python docs/notebooks/strip_outputs.py A.ipynb ...   # these
    .venv/bin/python docs/notebooks/strip_outputs.py --check       # exit 1 naming those with outputs

Run it before committing a notebook you executed (tests/test_notebooks.py fails otherwise).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def strip(nb) -> bool:
    """Clear every code cell's outputs and execution count (and the kernel's run metadata);
    True when something changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs, cell.execution_count = [], None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
        changed = True
    return changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted(Path(__file__).parent.glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path)
            if not check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{path}: {'has outputs' if check else 'stripped'}")
    return 1 if check and dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
