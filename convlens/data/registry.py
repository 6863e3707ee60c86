"""The data sources by kind: one registry maps a ``--data`` spec's prefix to its reader, as
:func:`convlens.models.load_model` is the one door to the model zoo.

Every source is decoded once into one ``uint8`` tensor ``(N, C, H, W)`` with integer labels and
the class names (an :class:`~convlens.data.imageset.ImageSet`), so training never touches the disk
again. The kinds, one module each:

* ``folder:PATH`` (:mod:`~convlens.data.folder`) - one subfolder per class; ``PATH/train`` and
  ``PATH/test`` (each with class subfolders) are kept as the given split; a bare existing folder
  path is read the same way;
* ``cmu-faces:PATH`` (:mod:`~convlens.data.cmu_faces`) - the CMU face images, ``label`` in
  identity/eyes/pose/expression, ``scale`` 1, 2 (64x60, default) or 4; the glitched ``.bad`` files
  are skipped and counted;
* ``mnist:PATH`` / ``fashion-mnist:PATH`` (:mod:`~convlens.data.mnist`) - the idx ``.gz`` (or plain)
  files of MNIST or Fashion-MNIST (its class names): the ``train-*`` and ``t10k-*`` pairs are the
  given split, a folder with one pair is read as the whole set (and ``describe()`` says so); a
  folder without them is downloaded into by torchvision's dataset code when online; without a
  ``PATH``, ``~/.cache/convlens/KIND``;
* ``digits`` (:mod:`~convlens.data.digits`) - scikit-learn's built-in 8x8 digits (offline, for
  demos and tests);
* arrays ``(X, y)`` as a notebook holds them (:mod:`~convlens.data.arrays`): ``X`` ``(N, H, W)`` or
  ``(N, H, W, C)``, uint8 or float (``[0, 1]`` or ``0..255``), ``y`` integer labels (or one-hot);
  ``((X_train, y_train), (X_test, y_test))`` is kept as the given split.

A new kind of source is a module in ``data/`` with a reader and one :class:`DataSource` in
:data:`SOURCES` below.

>>> ds = load_source("digits")
>>> ds.images.shape, ds.images.dtype, ds.class_names[:3]
(torch.Size([1797, 1, 8, 8]), torch.uint8, ['0', '1', '2'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import DataError, closest
from .arrays import array_source
from .cmu_faces import FACE_LABELS, cmu_faces_source
from .digits import digits_source
from .folder import folder_source
from .imageset import ImageSet
from .mnist import fetch_mnist, mnist_source

#: A reader: ``(path, label, scale) -> ImageSet``; ``path`` is None when the spec has none.
Reader = Callable[[str | None, str | None, int | None], ImageSet]


@dataclass(frozen=True)
class DataSource:
    """One kind of data source.

    Args:
        kind: the spec's prefix (``folder`` in ``folder:PATH``), lower case.
        usage: how a spec names it, for the errors (``folder:PATH``, ``digits``).
        read: the reader, given the text after ``KIND:`` (None when there is none), the
            ``label`` and the ``scale`` asked for.
        path: ``"required"`` (``KIND:PATH``), ``"optional"`` (``KIND`` alone reads a default place)
            or ``"none"`` (``KIND`` alone; ``KIND:PATH`` is not this source).
    """

    kind: str
    usage: str
    read: Reader
    path: str = "required"

    def matches(self, rest: str) -> bool:
        """Whether a spec ``KIND:REST`` (``rest`` empty for a bare ``KIND``) is this source.

        Args:
            rest: the text after ``KIND:``.

        Returns:
            bool: True when the source takes a spec with (or without) a path as given.
        """
        return bool(rest) if self.path == "required" else (not rest if self.path == "none" else True)


def _mnist_reader(kind: str) -> Reader:
    def read(path: str | None, label: str | None, scale: int | None) -> ImageSet:
        folder = path if path else str(Path.home() / ".cache" / "convlens" / kind)
        return mnist_source(fetch_mnist(folder, kind), kind=kind)

    return read


#: Every kind of data source by its prefix, in the order the errors list them.
SOURCES: dict[str, DataSource] = {s.kind: s for s in (
    DataSource("folder", "folder:PATH", lambda path, label, scale: folder_source(path)),
    DataSource("cmu-faces", "cmu-faces:PATH",
               lambda path, label, scale: cmu_faces_source(path, label=label or "identity", scale=int(scale or 2))),
    DataSource("mnist", "mnist:PATH", _mnist_reader("mnist"), path="optional"),
    DataSource("fashion-mnist", "fashion-mnist:PATH", _mnist_reader("fashion-mnist"), path="optional"),
    DataSource("digits", "digits", lambda path, label, scale: digits_source(), path="none"),
)}
#: The prefixes of :data:`SOURCES` (the name the data sources had before the registry).
SOURCE_KINDS = tuple(SOURCES)


def _is_pair(spec: Any) -> bool:
    return isinstance(spec, (tuple, list)) and len(spec) == 2 and not isinstance(spec[0], (str, os.PathLike))


def _usages() -> str:
    usages = [s.usage for s in SOURCES.values()]
    return ", ".join(usages[:-1]) + " or " + usages[-1]


def load_source(spec: Any, *, label: str | None = None, scale: int | None = None,
                class_names: Sequence[str] | None = None) -> ImageSet:
    """Resolve a ``--data`` spec (see the module docstring) to an :class:`ImageSet`.

    Args:
        spec: ``KIND:PATH`` or ``KIND`` of a registered source (:data:`SOURCES`), a bare existing
            folder path (read as ``folder:PATH``), an ``(x, y)`` pair of arrays or
            ``((x, y), (x_test, y_test))`` (:func:`~convlens.data.arrays.array_source`), or an
            ImageSet (returned as it is).
        label: the label kind of a ``cmu-faces`` source (default ``identity``).
        scale: the image scale of a ``cmu-faces`` source (default 2).
        class_names: the class names of arrays (the other sources bring their own).

    Returns:
        ImageSet: the decoded images, their labels and class names, and the split the source
            brings, if any.

    Raises:
        DataError: an unknown or unreadable source, or ``label`` / ``class_names`` given to a
            source that does not take them (each naming the parameter).
    """
    if isinstance(spec, ImageSet):
        return spec
    if _is_pair(spec):
        if _is_pair(spec[0]) and _is_pair(spec[1]):
            ds = array_source(spec[0][0], spec[0][1], class_names, test=(spec[1][0], spec[1][1]))
        else:
            ds = array_source(spec[0], spec[1], class_names)
        if label is not None:
            raise DataError(f"label {label!r}: only cmu-faces sources take one", param="label")
        return ds
    if class_names is not None:
        raise DataError("class_names: only arrays take class names (the other sources bring their own)",
                        param="class_names")
    if isinstance(spec, (tuple, list)) or (not isinstance(spec, (str, os.PathLike))):
        raise DataError(f"data: a {type(spec).__name__} is not a data source; pass folder:PATH, mnist:PATH, "
                        f"cmu-faces:PATH, digits or an (x, y) pair of arrays", param="data")
    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    source = SOURCES.get(kind)
    if source is not None and source.matches(rest):
        ds = source.read(rest or None, label, scale)
    elif text and Path(text).is_dir() and not rest:
        ds = folder_source(text)
    else:
        raise DataError(f"data {text!r}: unknown data source; use {_usages()}{closest(kind, SOURCES)}",
                        param="data")
    if label is not None and ds.source["kind"] != "cmu-faces":
        raise DataError(f"label {label!r}: only cmu-faces sources take one ({', '.join(FACE_LABELS)})", param="label")
    return ds


def split_index(text: str) -> tuple[str, list[int] | None]:
    """Split ``DATA@INDEX`` into the data spec and the indices it picks.

    Only a registered source's spec takes an index (``folder:``, ``cmu-faces:``, ``mnist:``,
    ``fashion-mnist:``, ``digits``), so a file named ``a@2.png`` stays a file.

    >>> split_index("digits@0-2")
    ('digits', [0, 1, 2])

    Args:
        text: the spec, with ``@23``, a range ``@0-4`` or a list ``@3,7,9`` at its end.

    Returns:
        tuple[str, list[int] | None]: the spec without the index and the indices, or ``(text, None)``
            for text without an index.

    Raises:
        DataError: an index that is not a number, a range or a list.
    """
    head, at, tail = str(text).rpartition("@")
    kind = head.partition(":")[0].lower()
    source = SOURCES.get(kind)
    if not at or source is None or not (":" in head or source.path == "none"):
        return str(text), None
    picks: list[int] = []
    for part in tail.split(","):
        a, dash, b = part.strip().partition("-")
        if not a.isdigit() or (dash and not b.isdigit()):
            raise DataError(f"data {text!r}: @INDEX takes a number, a range 0-9 or a list 3,7,9 "
                            f"(got {tail!r})", param="data")
        picks += list(range(int(a), int(b) + 1)) if dash else [int(a)]
    return head, picks


def pick_images(text: str, **kwargs: Any) -> ImageSet | None:
    """The images ``DATA@INDEX`` names (:func:`split_index`).

    Args:
        text: the spec with its index.
        **kwargs: passed to :func:`load_source` (``label``, ``scale``).

    Returns:
        ImageSet | None: the picked images in the order given, or None when ``text`` has no index.

    Raises:
        DataError: an index past the set's last image, or a source that cannot be read.
    """
    spec, picks = split_index(text)
    if picks is None:
        return None
    ds = load_source(spec, **kwargs)
    bad = [i for i in picks if i >= len(ds)]
    if bad:
        raise DataError(f"data {text!r}: index {bad[0]} is past the last image ({len(ds) - 1}; "
                        f"{len(ds)} images)", param="data")
    return ds.subset(picks)
