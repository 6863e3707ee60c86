"""Writing results: PNG bytes, atomic files and transactional directories.

A file is written to a temporary name beside it, then renamed: never half-written.  A
directory written through :class:`OutDir` is a transaction: its files are staged and appear
only when it is committed (``saved()``, or the end of a ``with OutDir(path):`` block).

"Complete or none", precisely:

- a directory that does not exist yet is staged in a hidden sibling of its first missing
  folder (``.NAME.convlens-staging-XXXXXXXX``) and appears by one rename, with every file in it;
- a directory that exists already (earlier outputs, ``--out .``) keeps what it holds: the new
  files are staged in a hidden folder inside it (``.convlens-staging-XXXXXXXX``) and moved in
  one by one at the end, with SIGINT and SIGTERM held off until the last is in (a signal that
  came meanwhile is delivered right after); name clashes with folders are found before
  anything moves.  An interrupted call leaves the earlier files as they were and nothing of
  its own;
- an exception (Ctrl-C included) removes the staging folder; so does the end of the process
  for a transaction left open.  Only a hard kill (SIGKILL, power loss) can leave a hidden
  staging folder behind, never a visible half of the output.

Inside ``with OutDir(path):`` every file written under ``path`` through this module (other
``OutDir``s, :func:`atomic_write_bytes` and the helpers built on it, so a view's ``save`` and an
HTML report alike) joins the one transaction, and SIGTERM ends the process as Ctrl-C does (in the
main thread, when nothing else handles it) so that the staging is removed on the way out.  A
signal seen during the block rolls it back even when its KeyboardInterrupt was swallowed on the way.

What a user owns (issue 27): :func:`check_not_precious` refuses ``--out .``, ``~``, ``/``;
:func:`check_replaceable` lets ``--force`` replace only convlens' output (the :data:`MARKER` file);
:func:`lock_output` makes one process the writer of a folder; :func:`clean_leftovers` removes what a
killed save left; a full disk is a :class:`NoSpaceError` naming the file.  Names are data:
:func:`shown` (terminal), :func:`text_safe`/:func:`json_safe` (UTF-8 files) and :func:`figure_text`
(figures) carry undecodable bytes and control characters as visible escapes.
"""

from __future__ import annotations

import atexit
import errno
import glob
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConvlensError, SpecError


class NoSpaceError(ConvlensError):
    """The disk (or the user's quota) filled up while convlens wrote a file: one line naming it."""


def no_space(exc: BaseException, what: str | os.PathLike | None = None) -> BaseException:
    """``exc`` as a :class:`NoSpaceError` naming the file when it is ENOSPC/EDQUOT, or a library's
    error that only says so in words (pyarrow's OSError, safetensors' ``SafetensorError``), else
    ``exc`` itself."""
    if isinstance(exc, NoSpaceError):
        return exc
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            isinstance(exc, Exception) and any(w in str(exc) for w in ("No space left on device", "os error 28",
                                                                         "Disk quota exceeded"))):
        where = what if what is not None else (exc.filename or "a file")
        return NoSpaceError(f"no space left on device while writing {shown(where)}; free some space and run it again")
    return exc


def shown(name: Any) -> str:
    """A name (file, class, run) as it can be printed on one terminal line: control characters
    (ANSI escapes, newlines, tabs) and the undecodable bytes that Python carries as lone
    surrogates (``\\udcff``) appear escaped (``\\x1b``, ``\\n``, ``\\xff``); the rest is left as
    written, so ordinary names, spaces and non-ASCII letters read as they are."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:  # any other lone surrogate cannot be encoded at all
            out.append(f"\\u{o:04x}")
        elif ch == "\\":
            out.append(ch)
        elif not ch.isprintable() and ch != " ":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def text_safe(name: Any) -> str:
    """A name as valid Unicode text for JSON, Parquet, HTML and figures: undecodable bytes
    (lone surrogates) become ``\\xNN`` as in :func:`shown`, everything else is kept (escaping
    for HTML is the template's job; control characters stay, JSON escapes them)."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def json_safe(obj: Any) -> Any:
    """``obj`` with every string (and key) holding undecodable bytes made :func:`text_safe`, so its
    JSON is valid UTF-8 with no lone-surrogate escapes; anything else as it is."""
    if isinstance(obj, str):
        return text_safe(obj)
    if isinstance(obj, dict):
        return {json_safe(k) if isinstance(k, str) else k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def figure_text(text: Any) -> str:
    """A label as a figure can draw it: like :func:`shown` (undecodable bytes as ``\\xNN``, control
    characters escaped), except that a newline still breaks the line; anything else (a number,
    None) as its ``str``."""
    return "\n".join(shown(part) for part in str(text).split("\n"))


def png_bytes(image: Image.Image, compress_level: int | None = None) -> bytes:
    """A PIL image encoded as PNG (what ``_repr_png_`` returns); ``compress_level`` 0-9 trades size for
    speed (zlib's level; Pillow's default 6 when None; the web server answers with 3)."""
    buf = io.BytesIO()
    if compress_level is None:
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="PNG", compress_level=int(compress_level))
    return buf.getvalue()


def _write_plain(path: Path, data: bytes, shown_as: Path | None = None) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        err = no_space(exc, shown_as or path)
        if err is exc:
            raise
        raise err from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary name beside ``path``, then rename it into place (the temporary
    file is removed if the write fails or is interrupted).  Under an open ``with OutDir(d):`` whose
    directory holds ``path``, the file is staged in that transaction instead and appears with it."""
    path = Path(path)
    stage = _open_stage_for(path)
    if stage is not None:
        _write_plain(stage.locate(path), data, path)
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        err = no_space(exc, path)
        if err is exc:
            raise
        raise err from None
    return path


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as a PNG atomically."""
    return atomic_write_bytes(path, png_bytes(image))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`; undecodable bytes of a name as ``\\xNN``)."""
    return atomic_write_bytes(path, text_safe(text).encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=indent) + "\n")


def atomic_write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a NumPy array as ``.npy`` atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())


def safe_stem(text: str, fallback: str = "x") -> str:
    """A file-name-safe stem: letters, digits, ``-``, ``_`` and ``.`` kept, the rest ``_``."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_.")
    return out or fallback


def unique_stems(names: Sequence[str], fallback: str = "image") -> list[str]:
    """One safe, distinct stem per name (the file's stem; repeats get ``_2``, ``_3``...)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        base = safe_stem(Path(str(n)).stem if n else "", fallback)
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append(base if k == 0 else f"{base}_{k + 1}")
    return out


@dataclass(frozen=True)
class Saved:
    """What a ``save(out_dir)`` wrote: the directory, its files by role, and per-item records.

    ``files``: role (``"overlay"``, ``"heatmap"``, ``"grid"``, ``"json"``...) -> paths, in the
    order written.  ``records``: optional per-item descriptions (JSON-ready dicts) that name
    their files, e.g. one per image x method x target for an explanation.
    """

    dir: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, role: str) -> list[Path]:
        return self.files[role]

    def paths(self) -> list[Path]:
        """Every file written, in order."""
        return [p for ps in self.files.values() for p in ps]

    def first(self, role: str) -> Path:
        return self.files[role][0]

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "files": {r: [str(p) for p in ps] for r, ps in self.files.items()},
                "records": list(self.records)}


# -- transactions ---------------------------------------------------------------------------------
STAGING = ".convlens-staging-"  #: the hidden staging folders' marker


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then are delivered (main thread only:
    elsewhere no Python handler can run anyway)."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old is None:  # a handler set outside Python: leave it alone
            continue
        previous[sig] = old
        signal.signal(sig, lambda s, _frame: caught.append(s))
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


#: Every SIGINT/SIGTERM an open transaction's handlers saw, in order.  A handler's KeyboardInterrupt
#: can be swallowed (raised inside a ``__del__``, a finalizer or a library's ``except BaseException``);
#: the transaction then still sees the signal at its end and rolls back instead of committing.
_SIGNALLED: list[int] = []


def _terminate(signum: int, _frame: Any) -> None:
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


def _make_hidden_dir(parent: Path, prefix: str, param: str, target: Path) -> Path:
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()  # the umask's permissions, as a folder made by hand (mkdtemp would give 0700)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise SpecError(f"{param} {target}: cannot write in {parent} ({exc.strerror or exc})",
                            param=param) from None
    raise SpecError(f"{param} {target}: cannot make a staging folder in {parent}", param=param)


class _Stage:
    """One staged directory: files land in a hidden folder and appear together on commit."""

    def __init__(self, target: Path, param: str):
        self.target = Path(os.path.abspath(target))
        self.param = param
        self.root: Path | None = None  # the hidden staging folder, made at the first write
        self.top: Path | None = None  # the first missing folder, when the target did not exist
        self.base: Path | None = None  # where the target's contents sit inside root
        self._finalizer: weakref.finalize | None = None
        self.committed = False  # the last transaction's files are in place

    def holds(self, path: Path) -> bool:
        p = Path(os.path.abspath(path))
        return p == self.target or self.target in p.parents

    def _open(self) -> None:
        # a signal between making the hidden folder and registering its removal would leave it
        # behind: it is held off until both are done
        with _signals_held():
            self._open_held()

    def _open_held(self) -> None:
        self.committed = False
        if self.target.is_dir():
            self.root = _make_hidden_dir(self.target, STAGING, self.param, self.target)
            self.top, self.base = None, self.root
        else:
            top = self.target
            while not top.parent.exists() and top.parent != top.parent.parent:
                top = top.parent
            if top.exists() or not top.parent.is_dir():
                raise SpecError(f"{self.param} {self.target}: {top if top.exists() else top.parent} "
                                "is a file, not a directory", param=self.param)
            self.root = _make_hidden_dir(top.parent, f".{top.name}{STAGING}", self.param, self.target)
            self.top, self.base = top, self.root / self.target.relative_to(top)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    def locate(self, path: Path) -> Path:
        """Where the file meant for ``path`` (under the target) is staged."""
        if self.root is None:
            self._open()
        assert self.base is not None
        return self.base / Path(os.path.abspath(path)).relative_to(self.target)

    def _close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # removes what is left of the staging folder, once
        self.root = self.top = self.base = self._finalizer = None

    def commit(self) -> None:
        with _signals_held():
            if self.root is None:  # nothing was written: the directory still comes to exist
                self.target.mkdir(parents=True, exist_ok=True)
                self.committed = True
                return
            assert self.base is not None
            if self.top is not None:
                self.base.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(self.root, self.top)  # one rename: all or nothing
                    self.committed = True
                    self._close()
                    return
                except OSError:
                    if not self.top.is_dir():
                        self._close()
                        raise SpecError(f"{self.param} {self.target}: {self.top} appeared as a file "
                                        "while writing", param=self.param) from None
                    # the folder appeared meanwhile (another writer): merge into it as below
            try:
                self._merge()
                self.committed = True
            finally:
                self._close()

    def _merge(self) -> None:
        assert self.base is not None
        moves = []
        for dirpath, _dirs, names in os.walk(self.base):
            for name in names:
                staged = Path(dirpath) / name
                moves.append((staged, self.target / staged.relative_to(self.base)))
        for _staged, final in moves:  # every clash found before anything moves
            if final.is_dir():
                raise SpecError(f"{self.param} {self.target}: {final} is a folder; nothing written",
                                param=self.param)
            for parent in final.relative_to(self.target).parents:
                where = self.target / parent
                if where.exists() and not where.is_dir():
                    raise SpecError(f"{self.param} {self.target}: {where} is a file, not a directory; "
                                    "nothing written", param=self.param)
        for staged, final in moves:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)

    def rollback(self) -> None:
        with _signals_held():
            self._close()


_OPEN: ContextVar[tuple[_Stage, ...]] = ContextVar("convlens_open_stages", default=())


def _open_stage_for(path: str | os.PathLike) -> _Stage | None:
    for stage in reversed(_OPEN.get()):
        if stage.holds(Path(path)):
            return stage
    return None


class OutDir:
    """Writes files under one directory as one transaction, and records them by role.

    Files are staged and appear together when :meth:`saved` is called (see the module's notes
    for what "complete or none" means for a directory that exists).  As a context manager the
    transaction spans the block: every file written under ``path`` inside it (other ``OutDir``s
    included) appears at its end, or none does when it raises.  ``param``: the argument named in
    errors (``out_dir``; a command passes ``out``).

    >>> import tempfile
    >>> from PIL import Image
    >>> out = OutDir(tempfile.mkdtemp())
    >>> _ = out.png("grid", "a/grid.png", Image.new("RGB", (2, 2)))
    >>> saved = out.saved()
    >>> [p.name for p in saved["grid"]]
    ['grid.png']
    """

    def __init__(self, path: str | os.PathLike, *, param: str = "out_dir"):
        self.dir = Path(path)
        self.files: dict[str, list[Path]] = {}
        self.records: list[dict[str, Any]] = []
        joined = _open_stage_for(self.dir)
        self._own = joined is None
        self._stage = joined if joined is not None else _Stage(self.dir, param)
        self._token: Any = None
        self._sigterm: Any = None
        self._sigint: Any = None
        self._seen = 0  # how many signals had been recorded when the block opened

    def _add(self, role: str, rel: str | os.PathLike, data: bytes) -> Path:
        path = self.dir / rel
        _write_plain(self._stage.locate(path), data, path)
        self.files.setdefault(role, []).append(path)
        return path

    def raw(self, role: str, rel: str | os.PathLike, data: bytes) -> Path:
        return self._add(role, rel, data)

    def png(self, role: str, rel: str | os.PathLike, image: Image.Image) -> Path:
        return self._add(role, rel, png_bytes(image))

    def text(self, role: str, rel: str | os.PathLike, text: str) -> Path:
        return self._add(role, rel, text_safe(text).encode("utf-8"))

    def json(self, role: str, rel: str | os.PathLike, obj: Any) -> Path:
        return self._add(role, rel, (json.dumps(json_safe(obj), indent=2) + "\n").encode("utf-8"))

    def npy(self, role: str, rel: str | os.PathLike, array: np.ndarray) -> Path:
        buf = io.BytesIO()
        np.save(buf, np.asarray(array))
        return self._add(role, rel, buf.getvalue())

    def record(self, **fields: Any) -> None:
        self.records.append(fields)

    @property
    def committed(self) -> bool:
        """Whether the transaction's files are in place (a signal held off during the commit is
        delivered after it: then the output is complete although the call was interrupted)."""
        return self._stage.committed

    def saved(self) -> Saved:
        """Commit (unless a ``with`` block of this or an enclosing ``OutDir`` holds the transaction
        open: then its end commits) and return what was written."""
        if self._own and self._token is None:
            self._stage.commit()
        return Saved(self.dir, {r: list(ps) for r, ps in self.files.items()}, list(self.records))

    def __enter__(self) -> "OutDir":
        if self._own and self._token is None:
            self._token = _OPEN.set(_OPEN.get() + (self._stage,))
            self._seen = len(_SIGNALLED)
            if _main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                self._sigterm = signal.signal(signal.SIGTERM, _terminate)
            if _main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._sigint = signal.signal(signal.SIGINT, _terminate)  # raises as before, and is recorded
            pause_point("out-open")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._own or self._token is None:
            return
        _OPEN.reset(self._token)
        self._token = None
        swallowed = exc_type is None and len(_SIGNALLED) > self._seen
        try:
            if exc_type is None and not swallowed:
                self._stage.commit()
            else:
                self._stage.rollback()
        finally:
            if self._sigterm is not None:
                signal.signal(signal.SIGTERM, self._sigterm)
                self._sigterm = None
            if self._sigint is not None:
                signal.signal(signal.SIGINT, self._sigint)
                self._sigint = None
        if swallowed:  # a signal came and its KeyboardInterrupt was lost on the way: still interrupted
            raise KeyboardInterrupt


# -- what convlens owns: the marker, the output lock, places never written ------------------------
#: The file convlens writes in every output folder it creates (runs, audits, a command's ``--out``):
#: ``--force`` replaces a folder only when it holds this, or is recognisably convlens' own.
MARKER = ".convlens-output"


def mark_output(directory: str | os.PathLike, kind: str) -> Path:
    """Write the ownership marker into ``directory`` (joins an open transaction like any file)."""
    return atomic_write_json(Path(directory) / MARKER, {"format": "convlens-output/1", "kind": kind})


def is_convlens_output(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is convlens' own output, which ``--force`` may replace: it holds the
    marker; or it is a run written before the marker existed (``config.json`` beside
    ``weights.safetensors``) or such an audit (an ``audit.json`` of the audit format); or it holds
    nothing but hidden leftovers of convlens' own staging."""
    d = Path(directory)
    if (d / MARKER).is_file():
        return True
    if (d / "config.json").is_file() and (d / "weights.safetensors").is_file():
        return True
    try:
        if json.loads((d / "audit.json").read_text(encoding="utf-8")).get("format", "").startswith("convlens-audit/"):
            return True
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return all(STAGING in p.name for p in d.iterdir())
    except OSError:
        return False


def swap_into_place(staged: Path, path: Path) -> None:
    """Rename the finished folder ``staged`` to ``path``; an earlier folder there is moved aside
    first (``.NAME.old-PID``, which :func:`clean_leftovers` gives back if a kill lands between the two
    renames) and removed after."""
    old = None
    if path.exists():
        old = path.resolve().parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(staged, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable(directory: str | os.PathLike, param: str = "force") -> None:
    """Refuse, in one line, to replace (``--force``) an existing folder that is not convlens' output."""
    d = Path(directory)
    if d.is_dir() and not is_convlens_output(d):
        raise SpecError(f"{param}: {shown(d)} holds files convlens did not write (no {MARKER} marker), so it is "
                        "not replaced; choose a new folder or move them away", param=param)


def check_not_precious(out: str | os.PathLike, param: str = "out") -> None:
    """Refuse, in one line, an output folder that is the file-system root, the home folder, the
    current folder or one of its parents (``--out .``, ``~``, ``/``, ``..``): an output there would
    mix with, or (with ``--force``) replace, what the user keeps."""
    raw = os.fsdecode(os.fspath(out))
    path = Path(os.path.abspath(os.path.expanduser(raw)))
    real = Path(os.path.realpath(path))
    cwd = Path(os.path.realpath(os.getcwd()))
    home = Path(os.path.realpath(os.path.expanduser("~")))
    why = None
    if real == Path(real.anchor):
        why = "the file-system root"
    elif real == home:
        why = "your home folder"
    elif real == cwd:
        why = "the current folder"
    elif real in cwd.parents:
        why = "a parent of the current folder"
    if why is not None:
        raise SpecError(f"{param} {shown(raw)}: is {why}; give a new folder for the output, e.g. {param} results",
                        param=param)


_LOCKS: dict[str, int] = {}  #: held output locks: the locked path -> the lock file's descriptor


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"convlens-locks-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def helper_rank() -> bool:
    """Whether this process is one of a data-parallel run's other processes (a non-zero rank set by
    Fabric's launcher, torchrun or SLURM): only process 0 writes, so only it takes the output lock."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "SLURM_LOCALID"):
        value = os.environ.get(name, "0").strip()
        if value.isdigit() and int(value) != 0:
            return True
    return False


def _lock_key(out: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(out))))


def lock_output(out: str | os.PathLike, param: str = "out") -> Path:
    """Take the exclusive lock on writing ``out`` for this process (held until :func:`unlock_output`
    or the process ends; taking it again is a no-op).  A second process asking for the same folder
    fails at once, in one line naming the process that holds it.

    The lock is an ``fcntl.flock`` on a file named after the folder's resolved path in a per-user
    folder of the temporary directory (not beside the output: the folder and its parents may not
    exist yet, a run's folder is replaced by a rename, and nothing is left among the user's files).
    The file holds the owner's pid; it is removed when released (a removed-then-recreated file is
    detected and the lock taken again, so two holders never coexist)."""
    import fcntl

    key = _lock_key(out)
    if key in _LOCKS or helper_rank():
        return Path(key)  # a data-parallel run's other processes write through its process 0, which holds it
    try:
        path = _lock_dir() / (hashlib.sha256(os.fsencode(key)).hexdigest()[:32] + ".lock")
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError:  # no usable temporary folder (read-only, another user's): the command goes on unlocked
        return Path(key)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").split()
            finally:
                os.close(fd)
            who = f"process {holder[0]}" if holder else "another process"
            raise SpecError(f"{param} {shown(out)}: {who} is writing there now; wait for it to end or choose "
                            "another folder", param=param) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # released and removed meanwhile: lock the new file
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {key}\n".encode("utf-8", "surrogateescape"))
    _LOCKS[key] = fd
    pause_point("out-locked")
    return Path(key)


def unlock_output(out: str | os.PathLike) -> None:
    """Release the lock :func:`lock_output` took (removing its file while still holding it)."""
    fd = _LOCKS.pop(_lock_key(out), None)
    if fd is None:
        return
    path = _lock_dir() / (hashlib.sha256(os.fsencode(_lock_key(out))).hexdigest()[:32] + ".lock")
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def unlock_outputs() -> None:
    """Release every output lock this process holds (the CLI does at the end of a command; the
    process's end releases them anyway)."""
    for key in list(_LOCKS):
        unlock_output(key)


atexit.register(unlock_outputs)


def clean_leftovers(out: str | os.PathLike) -> list[Path]:
    """Remove what a killed save of ``out`` left beside it (a run's ``.NAME.tmp-*`` / ``.NAME.old-*``
    folders, a transaction's ``.NAME.convlens-staging-*``) or inside it (``.convlens-staging-*``).
    Call it only while holding :func:`lock_output` for ``out``: then no live writer owns them."""
    path = Path(os.path.abspath(out))
    removed = []
    if not path.exists():  # killed between moving the earlier run aside and moving the new one in
        olds = sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*"), key=lambda p: p.stat().st_mtime)
        if olds and olds[-1].is_dir() and not olds[-1].is_symlink():
            os.replace(olds[-1], path)  # the earlier state comes back
    prefixes = (f".{path.name}.tmp-", f".{path.name}.old-", f".{path.name}{STAGING}")
    places = [(path.parent, prefixes), (path, (STAGING,))]
    for where, starts in places:
        try:
            entries = list(where.iterdir())
        except OSError:
            continue
        for p in entries:
            if p.name.startswith(starts) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def pause_point(phase: str) -> None:
    """A test hook: when ``CONVLENS_TEST_PAUSE`` names ``phase``, say so on stderr
    (``convlens-test: paused at PHASE pid N``) and wait for a line on stdin (or its end), so a
    test acts on the process at a known point (a signal, a second writer) instead of after a
    guessed time.  Does nothing otherwise."""
    if os.environ.get("CONVLENS_TEST_PAUSE") != phase:
        return
    sys.stderr.write(f"convlens-test: paused at {phase} pid {os.getpid()}\n")
    sys.stderr.flush()
    sys.stdin.readline()
