"""What an audit reads: DATA resolved to a list of :class:`Item` (an id, a true label or none, and
what to decode), without decoding anything, so a million files cost a listing and nothing more.

DATA is a folder with one subfolder per class (``PATH/{train,test}/<class>`` audits ``test/``),
a folder of images without class subfolders (audited by predicted class, with a warning), a list
of image files, a training run's split (``run:PATH`` = its test split, ``run:PATH:val``,
``run:PATH:train``, ``run:PATH:all``) or an in-memory :class:`~convlens.data.sources.ImageSet`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.sources import ImageSet
from ..errors import DataError
from ..images import is_image_path
from ..models.run import Run

RUN_PARTS = ("test", "val", "train", "all")


@dataclass
class Item:
    """One image to audit: ``index`` in the audit, ``id`` (a path or a run's item id), ``label``
    (the model's class index, -1 when unknown) and ``source`` (a path, or an HxW[xC] uint8 array)."""

    index: int
    id: str
    label: int
    source: Any


@dataclass
class AuditData:
    """The items with what the report needs to say about them."""

    items: list[Item]
    spec: str
    labelled: bool
    warnings: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A digest of the ids and labels, in order (a resumed audit must see the same items)."""
        h = hashlib.sha1()
        for it in self.items:
            h.update(f"{it.id}\t{it.label}\n".encode("utf-8", "surrogateescape"))  # names are bytes too
        return h.hexdigest()


def _files_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and is_image_path(p) and not p.name.startswith("."))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _match_labels(names: Sequence[str], model_classes: Sequence[str]) -> tuple[dict[str, int] | None, list[str]]:
    """Data class names -> the model's class indices (case-insensitive); None when some are not the model's."""
    lookup = {str(c).strip().lower(): i for i, c in enumerate(model_classes)}
    missing = [n for n in names if n.strip().lower() not in lookup]
    if missing:
        return None, missing
    return {n: lookup[n.strip().lower()] for n in names}, []


def _folder(root: Path, model_classes: Sequence[str]) -> AuditData:
    spec, warnings = str(root), []
    subdirs = _class_dirs(root)
    names = {d.name for d in subdirs}
    if {"train", "test"} <= names and any(_class_dirs(root / "test")):
        root = root / "test"
        warnings.append(f"{spec} holds train/ and test/: auditing its test/ split")
        subdirs = _class_dirs(root)
    classes = [(d.name, _files_under(d)) for d in subdirs]
    classes = [(n, f) for n, f in classes if f]
    loose = sorted(p for p in root.iterdir() if p.is_file() and is_image_path(p))
    if not classes:
        files = _files_under(root)
        if not files:
            raise DataError(f"data {spec}: folder holds no image files", param="data")
        warnings.append(f"{spec} has no class subfolders, so the true labels are unknown: "
                        "auditing by predicted class (accuracy is not measured)")
        return AuditData([Item(i, str(p), -1, str(p)) for i, p in enumerate(files)], spec, False, warnings)
    if loose:
        warnings.append(f"{spec}: {len(loose)} image file(s) beside the class subfolders have no class and are "
                        "left out")
    mapping, missing = _match_labels([n for n, _ in classes], model_classes)
    if mapping is None:
        warnings.append(f"{spec}: class folder(s) {', '.join(repr(m) for m in missing[:5])} are not classes of the "
                        "model: auditing by predicted class (accuracy is not measured)")
    items, k = [], 0
    for name, files in classes:
        for p in files:
            items.append(Item(k, str(p), -1 if mapping is None else mapping[name], str(p)))
            k += 1
    return AuditData(items, spec, mapping is not None, warnings)


def _hwc(img: Any) -> np.ndarray:
    a = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
    a = np.ascontiguousarray(np.moveaxis(a, 0, -1))
    return a[..., 0] if a.shape[-1] == 1 else a


def _imageset(ds: ImageSet, index: Sequence[int], spec: str, model_classes: Sequence[str]) -> AuditData:
    mapping, missing = _match_labels(ds.class_names, model_classes)
    warnings = []
    if mapping is None:
        warnings.append(f"{spec}: class(es) {', '.join(repr(m) for m in missing[:5])} are not classes of the model: "
                        "auditing by predicted class (accuracy is not measured)")
    items = []
    for k, i in enumerate(index):
        label = -1 if mapping is None else mapping[ds.class_names[int(ds.labels[i])]]
        items.append(Item(k, ds.ids[i], label, _hwc(ds.images[i])))
    if not items:
        raise DataError(f"data {spec}: holds no images", param="data")
    return AuditData(items, spec, mapping is not None, warnings)


def _run(text: str, model_classes: Sequence[str]) -> AuditData:
    body = text[4:]
    path, part = body, "test"
    head, _, tail = body.rpartition(":")
    if head and tail in RUN_PARTS:
        path, part = head, tail
    if not path:
        raise DataError(f"data {text!r}: run: needs a run directory (run:PATH[:test|val|train|all])", param="data")
    run = Run.load(path, weights=False)
    ds, split = run.dataset()
    index = list(range(len(ds))) if part == "all" else getattr(split, part).tolist()
    if not index:
        raise DataError(f"data {text}: the run's {part} split is empty", param="data")
    return _imageset(ds, index, text if text.count(":") > 1 else f"{text}:{part}", model_classes)


def resolve(data: Any, model_classes: Sequence[str]) -> AuditData:
    """DATA (see the module docstring) to the items of an audit; DataError (param ``data``) when there are none."""
    if isinstance(data, ImageSet):
        return _imageset(data, range(len(data)), str(data.source.get("spec", "images")), model_classes)
    if isinstance(data, (list, tuple)):
        if not data:
            raise DataError("data: an empty list of images", param="data")
        if len(data) == 1 and Path(str(data[0])).is_dir():
            return resolve(data[0], model_classes)
        items = []
        for i, p in enumerate(data):
            path = Path(str(p))
            if path.is_dir():
                raise DataError(f"data {path}: a folder in a list of files; give the folder alone", param="data")
            if not path.exists():
                raise DataError(f"data {path}: no such file", param="data")
            items.append(Item(i, str(path), -1, str(path)))
        return AuditData(items, f"{len(items)} files", False,
                         ["a list of files has no true labels: auditing by predicted class (accuracy is not measured)"])
    text = str(os.fspath(data)).strip()
    if text.startswith("run:"):
        return _run(text, model_classes)
    path = Path(text)
    if not path.exists():
        raise DataError(f"data {text}: no such folder or file", param="data")
    if path.is_dir():
        return _folder(path, model_classes)
    return resolve([path], model_classes)
