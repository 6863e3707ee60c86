"""What the explorer reads stays inside its roots, and what it answers names no server path.

Files read for a request lie in a folder the server was given (the runs folder, the package's
static files, an audited data folder).  A run or audit folder may have come from an archive,
which carries symbolic links: :func:`first_escape` walks a folder (every depth, links not
followed) and names the first entry that resolves outside its root, or that cannot be resolved.
Such a folder is treated as unreadable, never served.

Answers carry ids and names, never a path of this machine: :func:`public` rewrites a JSON-ready
value (a run's ``config.data.path``, an audit's model given as a checkpoint path, an error that
quotes a file) so that every absolute path becomes its last part and every served root its name.

>>> public({"data": {"path": "/tmp/faces", "spec": "folder"}})
{'data': {'path': 'faces', 'spec': 'folder'}}
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

#: the most entries one folder walk looks at; a run or audit folder holds a few dozen
MAX_ENTRIES = 100_000

#: an absolute POSIX path inside a text: a slash after a start, a space, a quote or a bracket
_ABS = re.compile(r"(?<![\w.~/-])/[^\s'\"<>|;,()\[\]{}]+")


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` resolves (every link followed) to ``root`` or below it; False when it
    cannot be resolved (a dangling link, a loop)."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, RuntimeError, ValueError):
        return False
    return real == root or root in real.parents


def first_escape(folder: Path, root: Path, limit: int = MAX_ENTRIES) -> str | None:
    """The first entry of ``folder`` (itself included, every depth) that resolves outside
    ``root`` (a resolved path) or cannot be resolved, named relative to ``folder``; None when
    everything lies inside.  Links are looked at, never followed into."""
    if not inside(root, folder):
        return "."
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            seen += 1
            if seen > limit:
                return f"more than {limit} files"
            p = Path(dirpath) / name
            if p.is_symlink() and not inside(root, p):
                return str(p.relative_to(folder))
    return None


def checked_file(root: Path, path: Path) -> Path | None:
    """``path`` when it is a regular file resolving inside ``root``, else None (absent, a link out)."""
    return path if path.is_file() and inside(root, path) else None


def _is_server_path(text: str) -> bool:
    parts = Path(text).parts
    return len(parts) >= 2 and os.path.isdir(os.path.join(parts[0], parts[1]))


def public_text(text: str, roots: Iterable[str | os.PathLike] = ()) -> str:
    """``text`` with every served root replaced by its name and every other absolute path of
    this machine by its last part (``/home/u/runs/x/config.json`` -> ``config.json``).  A
    slash-led word whose first folder does not exist here (an URL like ``/api/runs``) stays."""
    if "/" not in text:
        return text
    for root in sorted({str(r) for r in roots}, key=len, reverse=True):
        if len(root) > 1 and root in text:
            text = text.replace(root, Path(root).name)

    def name(m: re.Match) -> str:
        found = m.group(0)
        return (Path(found.rstrip("/.")).name or found) if _is_server_path(found) else found

    return _ABS.sub(name, text)


def public(value: Any, roots: Iterable[str | os.PathLike] = ()) -> Any:
    """A JSON-ready value with :func:`public_text` applied to every string in it (keys too);
    picture data URLs are left as they are."""
    roots = list(roots)
    if isinstance(value, str):
        return value if value.startswith("data:") else public_text(value, roots)
    if isinstance(value, dict):
        return {public(k, roots): public(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v, roots) for v in value]
    return value


_DATA_URL = re.compile(r"(data:[^\s\"')]+)")


def public_html(html: str, roots: Iterable[str | os.PathLike] = ()) -> str:
    """:func:`public_text` of a page, its embedded pictures (``data:`` URLs) left untouched."""
    roots = list(roots)
    return "".join(part if part.startswith("data:") else public_text(part, roots)
                   for part in _DATA_URL.split(html))
