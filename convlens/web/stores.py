"""The explorer's stores: models, images and runs by id, and the small LRU caches they keep.

Everything the browser names is an *id* checked against what the server knows:
models by the names given on the command line, images as ``sample:NAME`` (the
bundled scikit-image photos) or ``upload:HEX`` (a content hash of an upload kept
in a small LRU), runs by the name of a directory directly under ``--runs``.  The
client never sends a file path.

>>> store = ImageStore(samples=("chelsea",))
>>> store.get("sample:chelsea").image.size
(451, 300)
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
from PIL import Image

from ..errors import ConvlensError, ImageError, ModelError, RunError, closest
from ..images import load_image
from ..models import load_model
from ..models.run import Run
from .guard import first_escape, public_text

T = TypeVar("T")

#: The bundled scikit-image photos offered as samples (they ship inside scikit-image).
SAMPLES: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket")

#: Uploaded images are shrunk to this many pixels on the long side (the models see 224).
MAX_SIDE = 1024

_UPLOAD_ID = re.compile(r"^upload:[0-9a-f]{16}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class NotFound(ConvlensError):
    """An id the server does not know (HTTP 404)."""


class Unreadable(NotFound):
    """An id the server knows whose files cannot be read or may not be (a link out of its root):
    HTTP 404 for the thing itself, one row marked unreadable in a listing."""


def _escape_reason(escape: str) -> str:
    if escape == ".":
        return "it links outside the runs folder"
    if escape.startswith("more than"):
        return f"it holds {escape}"
    return f"{escape!r} links outside the runs folder"


class LRU:
    """A small thread-safe least-recently-used mapping with a fixed capacity.

    ``max_weight`` with ``weight(value)`` also bounds the total weight (bytes, pixels).
    """

    def __init__(self, capacity: int, max_weight: float | None = None,
                 weight: Callable[[Any], float] | None = None):
        self.capacity = capacity
        self.max_weight = max_weight
        self._weight = weight or (lambda _v: 0.0)
        self._total = 0.0
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if key in self._data:
                self._total -= self._weight(self._data.pop(key))
            self._data[key] = value
            self._total += self._weight(value)
            while len(self._data) > 1 and (len(self._data) > self.capacity or (
                    self.max_weight is not None and self._total > self.max_weight)):
                _, old = self._data.popitem(last=False)
                self._total -= self._weight(old)

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class StoredImage:
    """An image the server holds, by id; ``name`` is what predictions call it."""

    id: str
    name: str
    image: Image.Image


class ImageStore:
    """Sample photos by name and uploads by content hash (bounded LRU)."""

    def __init__(self, samples: Iterable[str] = SAMPLES, max_uploads: int = 256,
                 max_upload_pixels: int = 64_000_000):
        self.sample_names = list(samples)
        self._samples: dict[str, StoredImage] = {}
        # bounded by count and by decoded pixels (64 Mpx of RGB is ~190 MB at most)
        self._uploads = LRU(max_uploads, max_weight=max_upload_pixels,
                            weight=lambda s: s.image.width * s.image.height)
        self._lock = threading.Lock()

    def samples(self) -> list[dict[str, str]]:
        return [{"id": f"sample:{n}", "name": n} for n in self.sample_names]

    def _sample(self, name: str) -> StoredImage:
        with self._lock:
            if name not in self._samples:
                from skimage import data

                arr = np.asarray(getattr(data, name)())
                img = Image.fromarray(arr).convert("RGB")
                self._samples[name] = StoredImage(f"sample:{name}", f"{name}.png", img)
            return self._samples[name]

    def add(self, data: bytes, filename: str | None) -> StoredImage:
        """Decode an upload (clear :class:`ImageError` when it is not a good image) and keep it."""
        name = Path(filename or "upload").name or "upload"
        img = load_image(data, name=name)
        if max(img.size) > MAX_SIDE:
            img = img.copy()
            img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        key = "upload:" + hashlib.sha256(data).hexdigest()[:16]
        stored = StoredImage(key, name, img)
        self._uploads.put(key, stored)
        return stored

    def get(self, image_id: str) -> StoredImage:
        if not isinstance(image_id, str) or not image_id:
            raise ImageError("image: missing (give a sample id like 'sample:chelsea' or an upload id)")
        if image_id.startswith("sample:"):
            name = image_id[len("sample:"):]
            if name not in self.sample_names:
                raise NotFound(f"image {image_id!r}: no such sample{closest(name, self.sample_names)}")
            return self._sample(name)
        if _UPLOAD_ID.match(image_id):
            found = self._uploads.get(image_id)
            if found is None:
                raise NotFound(f"image {image_id!r}: unknown or expired upload (upload it again)")
            return found
        raise ImageError(f"image {image_id!r}: not an image id (want 'sample:NAME' or 'upload:HEX')")


class ModelStore:
    """Models by id, each loaded once on first use and cached.

    ``models``: names for :func:`~convlens.models.load_model` (``effnet-lite0``,
    ``timm:NAME``, a checkpoint...) or live :class:`~convlens.models.LensModel`
    objects; a trained run is addressed as ``run:RUN_ID`` when a runs folder is set.
    """

    def __init__(self, models: Iterable[Any], runs: "RunStore | None" = None, device: str = "cpu"):
        self._specs: dict[str, Any] = {}
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.runs = runs
        self.device = device
        for m in models:
            if isinstance(m, str):
                self._specs[_unique(model_id(m), self._specs)] = m
            else:
                key = _unique(model_id(m.name), self._specs)
                self._specs[key] = m
                self._loaded[key] = m
        if not self._specs and runs is None:
            raise ModelError("the web app needs at least one model")

    @property
    def ids(self) -> list[str]:
        out = list(self._specs)
        if self.runs is not None:
            out += [f"run:{r}" for r in self.runs.ids() if f"run:{r}" not in out]
        return out

    @property
    def default(self) -> str:
        ids = self.ids
        if not ids:
            raise ModelError("no model available (give --model or a --runs folder with a run)")
        return ids[0]

    def check(self, model_id: str | None) -> str:
        """The id itself (or the default) when it is served here; a clear 404 otherwise."""
        model_id = model_id or self.default
        if model_id not in self._specs and model_id not in self._loaded and model_id not in self.ids:
            raise NotFound(f"model {model_id!r}: not served here{closest(model_id, self.ids)}")
        return model_id

    def get(self, model_id: str | None):
        model_id = model_id or self.default
        with self._lock:
            if model_id in self._loaded:
                return self._loaded[model_id]
            spec = self._specs.get(model_id)
            in_runs = (self.runs is not None and model_id.startswith("run:") and spec in (None, model_id)
                       and model_id[4:] in self.runs.ids())  # --model run:NAME names a run of --runs
            if spec is not None and not in_runs:
                pass
            elif in_runs and self.runs is not None:
                run = self.runs.run(model_id[4:])
                try:
                    spec = run.model()
                except (ConvlensError, ValueError, OSError, RecursionError, OverflowError, MemoryError,
                        RuntimeError) as exc:  # torch says RuntimeError for a weight of the wrong shape
                    why = public_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, [self.runs.root])
                    raise Unreadable(f"model {model_id!r}: unreadable ({why[:300]})") from None
            else:
                raise NotFound(f"model {model_id!r}: not served here{closest(model_id, self.ids)}")
            model = spec if not isinstance(spec, str) else load_model(spec, device=self.device)
            self._loaded[model_id] = model
            return model


def model_id(spec: str) -> str:
    """The id a model is served under: its name as given (``effnet-lite0``, ``timm:resnet18``),
    or the last part of a file or folder path (a checkpoint, a run): never a server path."""
    if os.sep in spec or "/" in spec or os.path.exists(spec):
        kind, sep, rest = spec.partition(":")
        if sep and "/" not in kind and len(kind) > 1:  # run:PATH, keras:PATH
            return f"{kind}:{Path(rest.rstrip('/')).name or rest}"
        return Path(spec.rstrip("/")).name or spec
    return spec


def _unique(key: str, taken: dict[str, Any]) -> str:
    out, n = key, 1
    while out in taken:
        n += 1
        out = f"{key}-{n}"
    return out


class RunStore:
    """Training runs: the directories directly under ``root`` that hold a ``config.json``,
    each read through :class:`~convlens.models.run.Run` (and kept while it is unchanged)."""

    def __init__(self, root: str | Path, device: str = "cpu"):
        self.root = Path(root).resolve()
        self.device = device
        if not self.root.is_dir():
            raise RunError(f"runs_dir {root}: not a directory", param="runs_dir")
        self._runs = LRU(64)

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _RUN_ID.match(p.name) and (p / "config.json").is_file())

    def path(self, run_id: str) -> Path:
        """The directory of a run id; ids are checked, never joined blindly.  A run folder that is,
        or holds at any depth, a link resolving outside the runs folder is unreadable (404)."""
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or run_id not in self.ids():
            raise NotFound(f"run {run_id!r}: no such run{closest(str(run_id), self.ids())}")
        p = self.root / run_id
        escape = first_escape(p, self.root)
        if escape is not None:
            raise Unreadable(f"run {run_id!r}: unreadable ({_escape_reason(escape)})")
        return p

    def stamp(self, run_id: str) -> tuple[str, int]:
        """(id, version) of a run: a new version whenever its directory is replaced."""
        return run_id, self.path(run_id).stat().st_mtime_ns

    def run(self, run_id: str) -> Run:
        """The :class:`Run` of an id (its weights read on first use of its model); read again
        when the directory was replaced (a run is rewritten by a rename)."""
        key = self.stamp(run_id)
        run = self._runs.get(key)
        if run is None:
            try:
                run = Run.load(self.path(run_id), device=self.device, weights=False)
            except NotFound:
                raise
            except (ConvlensError, ValueError, OSError, RecursionError, OverflowError, MemoryError) as exc:
                # a hostile or broken run folder: said in one line naming the run, without a server path
                why = public_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, [self.root])
                raise Unreadable(f"run {run_id!r}: unreadable ({why[:300]})") from None
            self._runs.put(key, run)
        return run

