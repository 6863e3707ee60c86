"""Data sources: turn a ``--data`` spec into an in-memory :class:`ImageSet`.

Every source is decoded once into one ``uint8`` tensor ``(N, C, H, W)`` with
integer labels and the class names, so training never touches the disk again.

* ``folder:PATH`` - one subfolder per class; ``PATH/train`` and ``PATH/test``
  (each with class subfolders) are kept as the given split;
* ``cmu-faces:PATH`` - the CMU face images, ``label`` in identity/eyes/pose/expression,
  ``scale`` 1, 2 (64x60, default) or 4; the glitched ``.bad`` files are skipped and counted;
* ``mnist:PATH`` / ``fashion-mnist:PATH`` - the idx ``.gz`` (or plain) files of MNIST or
  Fashion-MNIST (its class names): the ``train-*`` and ``t10k-*`` pairs are the given split,
  a folder with one pair is read as the whole set (and ``describe()`` says so); a folder without
  them is downloaded into by torchvision's dataset code when online (:func:`fetch_mnist`);
* ``digits`` - scikit-learn's built-in 8x8 digits (offline, for demos and tests);
* arrays ``(X, y)`` as a notebook holds them (:func:`array_source`): ``X`` ``(N, H, W)`` or
  ``(N, H, W, C)``, uint8 or float (``[0, 1]`` or ``0..255``), ``y`` integer labels (or one-hot);
  ``((X_train, y_train), (X_test, y_test))`` is kept as the given split.

:func:`resize_set` makes smaller (or larger) copies (``size="WxH"``, width x height); :meth:`ImageSet.figure`
draws the data as a labelled gallery, one row (or more) per class.

>>> ds = load_source("digits")
>>> ds.images.shape, ds.images.dtype, ds.class_names[:3]
(torch.Size([1797, 1, 8, 8]), torch.uint8, ['0', '1', '2'])
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from PIL import Image

from ..errors import ConvlensError, DataError, closest
from ..images import is_image_path, load_image, load_many
from ..render.files import OutDir, Saved
from ..render.grid import grid
from ..view import View

SOURCE_KINDS = ("folder", "cmu-faces", "mnist", "fashion-mnist", "digits")
#: the most images a gallery draws by default (the course's 624 faces fit: all of them)
GALLERY_LIMIT = 640
#: the most thumbnails in one gallery row (a class with more wraps onto further rows)
GALLERY_COLS = 32
FACE_LABELS = ("identity", "eyes", "pose", "expression")
FACE_SCALES = {1: "", 2: "_2", 4: "_4"}


@dataclass
class ImageSet(View):
    """Decoded images with labels: ``images`` uint8 ``(N, C, H, W)``, ``labels`` long ``(N,)``.

    ``ids`` name every item reproducibly (a file path relative to the source root, or
    ``#index``); ``given_split`` holds ``"train"``/``"test"`` per item when the source
    comes with its own split; ``skipped`` counts unreadable files left out.

    A View: ``figure()`` is the labelled gallery, ``to_dict()`` the description (no pixels),
    ``save(out)`` writes ``gallery.png`` and ``data.json``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    ids: list[str]
    source: dict[str, Any]
    given_split: list[str] | None = None
    skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, int]:
        """Number of items per class name."""
        c = torch.bincount(self.labels, minlength=self.num_classes).tolist()
        return dict(zip(self.class_names, c))

    def subset(self, index: Sequence[int] | torch.Tensor) -> "ImageSet":
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], list(self.class_names),
                        [self.ids[i] for i in idx.tolist()], dict(self.source),
                        None if self.given_split is None else [self.given_split[i] for i in idx.tolist()])

    def to_dict(self) -> dict[str, Any]:
        """What the set holds (JSON-ready, no pixels): source, size, classes and their counts, split."""
        c, h, w = self.input_size
        out: dict[str, Any] = {"source": dict(self.source), "n": len(self), "height": h, "width": w, "channels": c,
                               "class_names": list(self.class_names), "counts": self.counts(),
                               "skipped": self.skipped, "skipped_files": list(self.skipped_files[:20]),
                               "description": self.describe()}
        if self.given_split is not None:
            out["given_split"] = dict(Counter(self.given_split))
        return out

    def gallery_items(self, limit: int | None = GALLERY_LIMIT, seed: int = 0) -> list[int]:
        """The items a gallery shows, by class then in order: all of them when there are at most
        ``limit`` (None: no limit), else a seeded sample of about ``limit`` spread evenly over the classes."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise DataError(f"limit must be a whole number of at least 1 (got {limit!r})", param="limit")
        labels = self.labels
        per = [torch.nonzero(labels == k).flatten() for k in range(self.num_classes)]
        if limit is None or len(self) <= limit:
            return [int(i) for idx in per for i in idx]
        gen = torch.Generator().manual_seed(int(seed))
        share = max(1, limit // max(1, sum(1 for idx in per if len(idx))))
        out = []
        for idx in per:
            pick = idx[torch.randperm(len(idx), generator=gen)[:share]].sort().values
            out += [int(i) for i in pick]
        return out

    def figure(self, limit: int | None = GALLERY_LIMIT, *, cols: int | None = None, cell: int | None = None,
               seed: int = 0, **_opts: Any) -> Image.Image:
        """The data as a gallery: one row per class (wrapping after ``cols`` thumbnails), the class
        name and its count on the left; all images when there are at most ``limit``, else a seeded
        sample per class (the subtitle says so). Small images are enlarged by a whole factor
        (nearest neighbours: 28x28 digits stay crisp), large ones shrunk to ``cell`` pixels."""
        items = self.gallery_items(limit, seed)
        if not items:
            raise DataError("this data set holds no images to draw", param="data")
        by_class: dict[int, list[int]] = {}
        for i in items:
            by_class.setdefault(int(self.labels[i]), []).append(i)
        widest = max(len(v) for v in by_class.values())
        ncol = int(cols) if cols is not None else min(GALLERY_COLS, widest)
        if ncol < 1:
            raise DataError(f"cols must be at least 1 (got {cols})", param="cols")
        _, h, w = self.input_size
        long = max(h, w)
        target = int(cell) if cell else (max(48, min(96, 2 * long)) if long < 96 else 96)
        k = max(1, target // long) if long <= target else target / long
        cw, ch = max(1, round(w * k)), max(1, round(h * k))
        rows: list[list[Image.Image]] = []
        titles: list[str] = []
        counts = self.counts()
        for label in sorted(by_class):
            idx = by_class[label]
            name = self.class_names[label]
            for r in range(0, len(idx), ncol):
                rows.append([self.thumbnail(i) for i in idx[r:r + ncol]])
                shown = f" ({len(idx)} of {counts[name]})" if len(idx) < counts[name] else f" ({counts[name]})"
                titles.append(f"{name}{shown}" if r == 0 else "")
        sub = (f"all {len(self)} images" if len(items) == len(self)
               else f"{len(items)} of {len(self)} images, a seeded sample per class")
        sub += f", {w}x{h} px" + (f" shown at {cw}x{ch}" if (cw, ch) != (w, h) else "")
        c = self.input_size[0]
        title = (f"{self.source.get('spec', self.source.get('kind'))}: {len(self)} images of {w}x{h}x{c}, "
                 f"{self.num_classes} classes")
        return grid(rows, row_titles=titles, title=title, subtitle=sub, cell=(cw, ch), pad=3, font_size=12)

    def thumbnail(self, i: int) -> Image.Image:
        """Item ``i`` as a PIL image (grey or RGB)."""
        a = self.images[int(i)].permute(1, 2, 0).numpy()
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)

    def save(self, out_dir: str | os.PathLike, limit: int | None = GALLERY_LIMIT, **opts: Any) -> Saved:
        """Write ``gallery.png`` (role ``gallery``, :meth:`figure`) and ``data.json`` (``json``)."""
        out = OutDir(out_dir)
        out.png("gallery", "gallery.png", self.figure(limit, **opts))
        out.json("json", "data.json", self.to_dict())
        return out.saved()

    def describe(self) -> str:
        c, h, w = self.input_size
        text = (f"{len(self)} images of {w}x{h}x{c}, {self.num_classes} classes "
                f"from {self.source.get('spec', self.source.get('kind'))}")
        if self.source.get("read"):
            text += f" ({self.source['read']})"
        if self.skipped:
            text += f"; skipped {self.skipped} unreadable file(s)"
        return text


# -- helpers -------------------------------------------------------------------------

def _decode(paths: Sequence[Path], mode: str | None, root: Path) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode files in a thread pool; unreadable ones come back as None (and are named)."""

    def one(p: Path) -> np.ndarray | None:
        try:
            return np.asarray(load_image(p, mode=mode))
        except ConvlensError:
            return None

    arrays = load_many(paths, one, workers=min(8, (os.cpu_count() or 1) * 2))
    bad = [str(p.relative_to(root)) for p, a in zip(paths, arrays) if a is None]
    return arrays, bad


def _stack(arrays: list[np.ndarray], size: tuple[int, int] | None, what: str) -> torch.Tensor:
    """Stack HxW or HxWxC arrays into (N, C, H, W) uint8, resizing to a common size if needed."""
    from PIL import Image

    rgb = any(a.ndim == 3 for a in arrays)
    sizes = Counter((a.shape[1], a.shape[0]) for a in arrays)  # (w, h)
    target = size or sizes.most_common(1)[0][0]
    out = []
    for a in arrays:
        if rgb and a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if (a.shape[1], a.shape[0]) != tuple(target):
            a = np.asarray(Image.fromarray(a).resize(tuple(target), Image.BILINEAR))
        out.append(a if a.ndim == 3 else a[..., None])
    try:
        batch = np.stack(out)
    except ValueError as exc:  # pragma: no cover - shapes were normalised above
        raise DataError(f"{what}: cannot stack images ({exc})") from None
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _check_classes(labels: list[int], class_names: list[str], what: str) -> None:
    present = sorted(set(labels))
    if len(present) < 2:
        only = class_names[present[0]] if present else "none"
        raise DataError(f"{what}: needs at least two classes to train a classifier (found only {only!r})")


# -- sources -------------------------------------------------------------------------

def folder_source(path: str | os.PathLike, *, size: tuple[int, int] | None = None,
                  mode: str | None = None) -> ImageSet:
    """Images in ``PATH/<class>/`` (or ``PATH/{train,test}/<class>/`` as the given split).

    ``size`` (w, h) resizes every image; by default the most common size is used.
    ``mode`` ``"L"``/``"RGB"`` forces the channels; by default grayscale stays one channel
    unless any image has colour.
    """
    root = Path(path)
    what = f"folder:{root}"
    if not root.exists():
        raise DataError(f"{what}: no such folder")
    if not root.is_dir():
        raise DataError(f"{what}: not a folder (want one subfolder per class)")
    splits = [d for d in ("train", "test") if (root / d).is_dir()]
    parts: list[tuple[str | None, Path]] = [(s, root / s) for s in splits] if splits == ["train", "test"] else [(None, root)]
    class_names = sorted({d.name for _, base in parts for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")})
    if not class_names:
        raise DataError(f"{what}: no class subfolders (want {root}/<class>/image files)")
    paths: list[Path] = []
    labels: list[int] = []
    split: list[str] = []
    for s, base in parts:
        for ci, name in enumerate(class_names):
            d = base / name
            if not d.is_dir():
                continue
            files = sorted(p for p in d.rglob("*") if p.is_file() and is_image_path(p))
            paths += files
            labels += [ci] * len(files)
            split += [s or ""] * len(files)
    if not paths:
        raise DataError(f"{what}: holds no image files in its class subfolders ({', '.join(class_names)})")
    arrays, bad = _decode(paths, mode, root)
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if not keep:
        raise DataError(f"{what}: none of its {len(paths)} image files could be read")
    labels = [labels[i] for i in keep]
    _check_classes(labels, class_names, what)
    used = sorted(set(labels))
    remap = {old: new for new, old in enumerate(used)}
    images = _stack([arrays[i] for i in keep], size, what)  # type: ignore[misc]
    ids = [paths[i].relative_to(root).as_posix() for i in keep]
    given = [split[i] for i in keep] if splits == ["train", "test"] else None
    if given is not None and ("test" not in given or "train" not in given):
        raise DataError(f"{what}: its train/ or test/ split holds no readable images")
    return ImageSet(images, torch.tensor([remap[v] for v in labels], dtype=torch.long),
                    [class_names[i] for i in used], ids,
                    {"kind": "folder", "path": str(root.resolve()), "spec": f"folder:{root}"},
                    given_split=given, skipped=len(bad), skipped_files=bad)


def cmu_faces_source(path: str | os.PathLike, *, label: str = "identity", scale: int = 2) -> ImageSet:
    """The CMU face images (``user_pose_expression_eyes[_scale].pgm``) with one label kind."""
    root = Path(path)
    what = f"cmu-faces:{root}"
    if label not in FACE_LABELS:
        raise DataError(f"label {label!r}: not a cmu-faces kind; use one of "
                        f"{', '.join(FACE_LABELS)}{closest(label, FACE_LABELS)}", param="label")
    if scale not in FACE_SCALES:
        raise DataError(f"scale {scale}: use 1 (128x120), 2 (64x60) or 4 (32x30)", param="scale")
    if not root.is_dir():
        raise DataError(f"{what}: no such folder")
    suffix = FACE_SCALES[scale]
    files, bad_files = [], []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".bad":
            bad_files.append(p.relative_to(root).as_posix())
            continue
        if p.suffix != ".pgm":
            continue
        parts = p.stem.split("_")
        if suffix:
            if parts[-1] != suffix[1:]:
                continue
            parts = parts[:-1]
        elif parts[-1] in ("2", "4"):
            continue
        if len(parts) != 4:
            continue
        files.append((p, parts))
    if not files:
        raise DataError(f"{what}: no face images user_pose_expression_eyes{suffix}.pgm found")
    field_of = {"identity": 0, "pose": 1, "expression": 2, "eyes": 3}[label]
    names = [parts[field_of] for _, parts in files]
    arrays, unreadable = _decode([p for p, _ in files], "L", root)
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if not keep:
        raise DataError(f"{what}: none of its {len(files)} face images could be read")
    class_names = sorted({names[i] for i in keep})
    labels = [class_names.index(names[i]) for i in keep]
    _check_classes(labels, class_names, what)
    images = _stack([arrays[i] for i in keep], None, what)  # type: ignore[misc]
    skipped = bad_files + unreadable
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), class_names,
                    [files[i][0].relative_to(root).as_posix() for i in keep],
                    {"kind": "cmu-faces", "path": str(root.resolve()), "label": label, "scale": scale,
                     "spec": f"cmu-faces:{root}"},
                    skipped=len(skipped), skipped_files=skipped)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read idx file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: idx file is truncated ({body.size} of {int(np.prod(dims))} values)")
    return body.reshape(tuple(dims))


#: Fashion-MNIST's ten classes, in label order (Zalando's README)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: idx file-name prefixes -> the part of the given split they are
IDX_PARTS = {"train": "train", "t10k": "test", "test": "test"}


def _idx_pairs(root: Path, what: str) -> dict[str, tuple[Path, Path]]:
    """``prefix -> (images, labels)`` for ``PREFIX-images-idx3-ubyte[.gz]`` and its labels file.

    A file present both plain and gzipped is read once (the plain copy); an images file
    without its labels (or labels without images) is an error naming the missing file.
    """
    def files(kind: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in sorted(root.glob(f"*{kind}-idx*-ubyte*")):
            if not p.is_file() or p.name.endswith((".part", ".tmp")) or p.suffix not in ("", ".gz"):
                continue
            prefix = p.name.split(f"{kind}-idx")[0].rstrip("-_.")
            if prefix not in out or out[prefix].suffix == ".gz":
                out[prefix] = p
        return out

    imgs, labs = files("images"), files("labels")
    if not imgs and not labs:
        raise DataError(f"{what}: no idx files (want train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz "
                        f"and the t10k-* pair, gzipped or not)")
    for have, want, kind in ((imgs, labs, "labels-idx1-ubyte"), (labs, imgs, "images-idx3-ubyte")):
        for prefix, p in have.items():
            if prefix not in want:
                raise DataError(f"{what}: {p.name} has no matching {prefix + '-' if prefix else ''}{kind}[.gz] file")
    return {k: (imgs[k], labs[k]) for k in sorted(imgs)}


def _read_pair(images: Path, labels: Path, what: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _read_idx(images), _read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"{what}: {images.name} holds {x.shape} and {labels.name} {y.shape}; "
                        f"want (N, H, W) images and N labels")
    if y.size and int(y.max()) >= n_classes:
        raise DataError(f"{what}: {labels.name} has label {int(y.max())}; MNIST-style labels are 0..{n_classes - 1}")
    return x, y


#: where torchvision's dataset code downloads MNIST and Fashion-MNIST from, and the files they hold
MNIST_HOMES = {"mnist": ("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
               "fashion-mnist": ("FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")}
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


def fetch_mnist(path: str | os.PathLike, kind: str = "fashion-mnist") -> Path:
    """The folder holding the idx files of ``kind`` under ``path``: ``path`` itself, or torchvision's
    layout ``path/FashionMNIST/raw``; when neither has them, torchvision's dataset code downloads them
    there (online), else a :class:`DataError` says which files to put where (offline, or
    ``CONVLENS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` in the environment: no download is tried)."""
    root = Path(path)
    name, url = MNIST_HOMES[kind]
    for folder in (root, root / name / "raw"):
        if folder.is_dir() and any(folder.glob("*-idx*-ubyte*")):
            return folder
    if root.exists() and not root.is_dir():
        raise DataError(f"{kind}:{root}: not a folder")
    host = url.split("/")[2]
    told = [v for v in ("CONVLENS_OFFLINE", "HF_HUB_OFFLINE") if os.environ.get(v, "").strip().lower() in ("1", "true")]
    try:
        if told:
            raise OSError(f"{told[0]} is set")
        import socket

        socket.create_connection((host, 443 if url.startswith("https") else 80), timeout=3).close()
    except OSError as exc:
        raise DataError(f"{kind}:{root}: no idx files there and no network to download them ({host}: "
                        f"{exc.strerror or exc}); put {', '.join(MNIST_FILES)} (from {url}) into {root}") from None
    from torchvision import datasets  # the dataset code checks the files' MD5 sums

    try:
        getattr(datasets, name)(str(root), train=True, download=True)
    except Exception as exc:  # network errors mid-download: one line, nothing half-read
        raise DataError(f"{kind}:{root}: download failed ({' '.join(str(exc).split())}); put "
                        f"{', '.join(MNIST_FILES)} (from {url}) into {root}") from None
    return root / name / "raw"


def mnist_source(path: str | os.PathLike, *, kind: str = "mnist") -> ImageSet:
    """MNIST (``kind="mnist"``) or Fashion-MNIST (``kind="fashion-mnist"``) from its idx files.

    The standard download holds two pairs, ``train-{images-idx3,labels-idx1}-ubyte[.gz]``
    (60,000) and ``t10k-*`` (10,000): both are read and kept as the given train/test split
    (ids ``train#i`` and ``t10k#i``). A folder with one pair only reads that pair as the whole
    set (ids ``#i``) to be split by seed, and its ``source["read"]`` says so.
    """
    root = Path(path)
    what = f"{kind}:{root}"
    if kind not in ("mnist", "fashion-mnist"):
        raise DataError(f"kind {kind!r}: use mnist or fashion-mnist", param="kind")
    if not root.is_dir():
        raise DataError(f"{what}: no such folder")
    class_names = list(FASHION_CLASSES) if kind == "fashion-mnist" else [str(i) for i in range(10)]
    pairs = _idx_pairs(root, what)
    parts = {IDX_PARTS.get(k.lower()): k for k in pairs}
    if len(pairs) > 1 and (len(pairs) != 2 or set(parts) != {"train", "test"}):
        raise DataError(f"{what}: idx pairs {', '.join(repr(k) for k in pairs)}: want one pair, or a "
                        f"train-* and a t10k-* pair (the given train/test split)")
    xs, ys, ids, split, read = [], [], [], [], []
    order = [parts["train"], parts["test"]] if len(pairs) == 2 else list(pairs)
    for prefix in order:
        x, y = _read_pair(*pairs[prefix], what, len(class_names))
        xs.append(x)
        ys.append(y)
        ids += [f"{prefix}#{i}" if len(pairs) == 2 else f"#{i}" for i in range(len(y))]
        split += [IDX_PARTS[prefix.lower()]] * len(y) if len(pairs) == 2 else []
        read.append(f"{pairs[prefix][0].name} ({len(y)})")
    if len({x.shape[1:] for x in xs}) > 1:
        raise DataError(f"{what}: the train and test images differ in size "
                        f"({' vs '.join('x'.join(map(str, x.shape[1:])) for x in xs)})")
    if len(pairs) == 2:
        note = f"read {read[0]} and {read[1]} as the given train/test split"
    else:
        other = "t10k-*" if IDX_PARTS.get(order[0].lower()) == "train" else "train-*"
        note = f"read only {read[0]}: no {other} pair in {root}, so the seeded split divides these images"
    x, y = np.concatenate(xs), np.concatenate(ys)
    images = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
    labels = torch.from_numpy(y.astype(np.int64))
    return ImageSet(images, labels, class_names, ids,
                    {"kind": kind, "path": str(root.resolve()), "spec": f"{kind}:{root}",
                     "files": [p.name for k in order for p in pairs[k]], "read": note},
                    given_split=split or None)


def digits_source() -> ImageSet:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to 0..255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSet(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(d.target.astype(np.int64)),
                    [str(i) for i in range(10)], [f"#{i}" for i in range(len(x))],
                    {"kind": "digits", "spec": "digits"})


def _pixels(x: Any, what: str) -> torch.Tensor:
    """Notebook images to uint8 ``(N, C, H, W)``: (N, H, W) or (N, H, W, C) with C 1 or 3
    (or (N, C, H, W)); uint8 as they are, other numbers in [0, 1] (scaled by 255) or 0..255."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: not an array of images ({exc})", param="data") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or a.dtype == bool:
        raise DataError(f"{what}: images must be numbers (got dtype {a.dtype})", param="data")
    shape = "x".join(map(str, a.shape)) or "a scalar"
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    elif a.ndim == 4 and a.shape[1] in (1, 3):
        pass
    else:
        raise DataError(f"{what}: images of shape {shape}; want (N, H, W) or (N, H, W, C) with 1 or 3 channels",
                        param="data")
    if a.shape[0] == 0 or a.shape[2] < 1 or a.shape[3] < 1:
        raise DataError(f"{what}: images of shape {shape} hold no pixels", param="data")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    v = a.astype(np.float64)
    if not np.isfinite(v).all():
        raise DataError(f"{what}: images hold NaN or infinite values", param="data")
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 or hi > 255:
        raise DataError(f"{what}: pixel values from {lo:g} to {hi:g}; want uint8, floats in [0, 1] "
                        f"or numbers in 0..255", param="data")
    if hi <= 1.0 and not np.issubdtype(a.dtype, np.integer):
        v = v * 255.0
    return torch.from_numpy(np.ascontiguousarray(np.rint(v).astype(np.uint8)))


def _labels(y: Any, n: int, what: str) -> torch.Tensor:
    """Integer labels ``(N,)`` (or one-hot ``(N, K)``) to long ``(N,)``."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    try:
        a = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: labels are not an array ({exc})", param="data") from None
    if a.ndim == 2 and a.shape[0] == n and a.shape[1] > 1:
        a = a.argmax(axis=1)  # one-hot (Keras' to_categorical)
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{what}: {n} images but labels of shape {'x'.join(map(str, a.shape)) or 'a scalar'}; "
                        f"want {n} labels", param="data")
    if not np.issubdtype(a.dtype, np.number) or a.dtype == bool:
        raise DataError(f"{what}: labels must be whole numbers 0..K-1 (got dtype {a.dtype})", param="data")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.isfinite(a).all() or not np.all(a == np.round(a)):
            raise DataError(f"{what}: labels must be whole numbers 0..K-1", param="data")
    a = a.astype(np.int64)
    if a.size and int(a.min()) < 0:
        raise DataError(f"{what}: label {int(a.min())} is negative; want 0..K-1", param="data")
    return torch.from_numpy(a)


def array_source(x: Any, y: Any, class_names: Sequence[str] | None = None, *,
                 test: "tuple[Any, Any] | None" = None) -> ImageSet:
    """Images and labels as a notebook holds them (NumPy arrays or tensors) as an :class:`ImageSet`.

    ``x``: ``(N, H, W)`` or ``(N, H, W, C)`` (C = 1 or 3; ``(N, C, H, W)`` too), uint8 as it is,
    floats in [0, 1] scaled by 255, other numbers in 0..255; ``y``: ``N`` integer labels 0..K-1 (or
    one-hot); ``class_names``: one per label (default ``"0"``, ``"1"``...); ``test``: a second
    ``(x, y)`` pair kept as the given test split. ``source["digest"]`` identifies the pixels and
    labels (runs of the same arrays compare; a run keeps them to be evaluated again).
    """
    what = "data (arrays)"
    xs = [_pixels(x, what)]
    ys = [_labels(y, len(xs[0]), what)]
    if test is not None:
        if not isinstance(test, (tuple, list)) or len(test) != 2:
            raise DataError(f"{what}: the test part must be an (x, y) pair", param="data")
        xt = _pixels(test[0], "data (test arrays)")
        xs.append(xt)
        ys.append(_labels(test[1], len(xt), "data (test arrays)"))
        if xt.shape[1:] != xs[0].shape[1:]:
            raise DataError(f"{what}: train images are {tuple(xs[0].shape[1:])} (C, H, W) and test images "
                            f"{tuple(xt.shape[1:])}; they must be the same size", param="data")
    images, labels = torch.cat(xs), torch.cat(ys)
    top = int(labels.max()) if len(labels) else 0
    if class_names is None:
        names = [str(i) for i in range(top + 1)]
    else:
        if isinstance(class_names, str):
            raise DataError("class_names must be a list of names, one per label (got a string)", param="class_names")
        names = [str(c) for c in class_names]
        if len(names) <= top:
            raise DataError(f"class_names: {len(names)} names for labels up to {top}; give one name per label "
                            f"0..{top}", param="class_names")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise DataError(f"class_names: {dup!r} is given twice; every class needs its own name",
                            param="class_names")
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        raise DataError(f"{what}: needs at least two classes to train a classifier (found only "
                        f"{names[present[0]] if present else 'none'!r})", param="data")
    h = hashlib.sha256()
    h.update(str((tuple(images.shape), names)).encode())
    h.update(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    if test is not None:
        h.update(str(len(xs[0])).encode())
    n0 = len(xs[0])
    ids = [f"#{i}" for i in range(n0)] if test is None else \
        [f"train#{i}" for i in range(n0)] + [f"test#{i}" for i in range(len(images) - n0)]
    given = None if test is None else ["train"] * n0 + ["test"] * (len(images) - n0)
    c, hh, ww = images.shape[1:]
    read = f"{n0} train and {len(images) - n0} test images as the given split" if test is not None else None
    source = {"kind": "arrays", "spec": "arrays", "digest": h.hexdigest()[:32], "n": int(len(images))}
    if read:
        source["read"] = read
    return ImageSet(images, labels, names, ids, source, given_split=given)


def parse_size(size: Any) -> tuple[int, int] | None:
    """``"WxH"`` (width x height, as ``--scale`` and every summary print sizes: ``"32x30"`` is 32
    wide, 30 tall), one number (square) or an ``(h, w)`` tuple -> ``(h, w)``; None passes through."""
    if size is None or (isinstance(size, str) and size == ""):  # (== "" on an array is elementwise)
        return None
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").replace("×", "x").split("x")
        if len(parts) == 1:
            parts = parts * 2
        try:
            w, h = (int(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            h = w = None
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        h, w = int(size[0]), int(size[1])
    else:
        h = w = None
    if h is None or w is None:
        raise DataError(f"size {size!r}: want WxH, e.g. 28x28 or 32x30 (width x height)", param="size")
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise DataError(f"size {size!r}: width and height must be between 1 and 4096", param="size")
    return h, w


class SizeWarning(UserWarning):
    """A resize that turns landscape images portrait or the reverse (a size given as HxW?)."""


def resize_set(ds: ImageSet, size: Any) -> ImageSet:
    """Copies of every image at ``size`` (``"WxH"`` or an ``(h, w)`` tuple; antialiased bilinear,
    uint8); ``source["size"]`` records it as ``[h, w]`` (a run re-reads its data at the same size).
    The same set when it is already that size. A size that swaps the images' orientation (64x60
    faces to 60x64) draws a :class:`SizeWarning`: it distorts every image."""
    hw = parse_size(size)
    if hw is None or tuple(ds.images.shape[-2:]) == hw:
        return ds
    h0, w0 = (int(v) for v in ds.images.shape[-2:])
    if (h0 - w0) * (hw[0] - hw[1]) < 0:
        warnings.warn(f"size {hw[1]}x{hw[0]} (width x height) turns {w0}x{h0} images "
                      f"{'portrait' if hw[0] > hw[1] else 'landscape'}: every image is distorted; "
                      f"for their shape write {hw[0]}x{hw[1]}", SizeWarning, stacklevel=2)
    chunks = []
    for i in range(0, len(ds), 4096):
        x = ds.images[i:i + 4096].float()
        y = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
        chunks.append(y.round().clamp(0, 255).to(torch.uint8))
    images = torch.cat(chunks) if chunks else ds.images
    source = {**ds.source, "size": [hw[0], hw[1]],
              "original_size": list(ds.source.get("original_size") or ds.images.shape[-2:])}
    return ImageSet(images.contiguous(), ds.labels, list(ds.class_names), list(ds.ids), source,
                    given_split=ds.given_split, skipped=ds.skipped, skipped_files=list(ds.skipped_files))


def split_index(text: str) -> tuple[str, list[int] | None]:
    """``"DATA@23"`` -> ``("DATA", [23])``; ``@0-4`` and ``@3,7,9`` pick several; text without an
    index -> ``(text, None)``. Only a data-source spec takes an index (``folder:``, ``cmu-faces:``,
    ``mnist:``, ``fashion-mnist:``, ``digits``), so a file named ``a@2.png`` stays a file."""
    head, at, tail = str(text).rpartition("@")
    kind = head.partition(":")[0].lower()
    if not at or not (kind in SOURCE_KINDS and (":" in head or kind == "digits")):
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
    """The images ``DATA@INDEX`` names, as an :class:`ImageSet` in the order given (each index
    checked against the set's size), or None when ``text`` has no index."""
    spec, picks = split_index(text)
    if picks is None:
        return None
    ds = load_source(spec, **kwargs)
    bad = [i for i in picks if i >= len(ds)]
    if bad:
        raise DataError(f"data {text!r}: index {bad[0]} is past the last image ({len(ds) - 1}; "
                        f"{len(ds)} images)", param="data")
    return ds.subset(picks)


def _is_pair(spec: Any) -> bool:
    return isinstance(spec, (tuple, list)) and len(spec) == 2 and not isinstance(spec[0], (str, os.PathLike))


def load_source(spec: Any, *, label: str | None = None, scale: int | None = None,
                class_names: Sequence[str] | None = None) -> ImageSet:
    """Resolve a ``--data`` spec (see the module docstring) to an :class:`ImageSet`.

    A bare existing folder path is read as ``folder:PATH``; an ``(x, y)`` pair of arrays (or
    ``((x, y), (x_test, y_test))``) goes to :func:`array_source` with ``class_names``.
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
    if kind == "digits" and not rest:
        ds = digits_source()
    elif kind in ("folder", "cmu-faces", "mnist", "fashion-mnist") and rest:
        if kind == "folder":
            ds = folder_source(rest)
        elif kind == "cmu-faces":
            ds = cmu_faces_source(rest, label=label or "identity", scale=int(scale or 2))
        else:
            ds = mnist_source(fetch_mnist(rest, kind), kind=kind)
    elif kind in ("mnist", "fashion-mnist") and not rest:
        ds = mnist_source(fetch_mnist(str(Path.home() / ".cache" / "convlens" / kind), kind), kind=kind)
    elif text and Path(text).is_dir() and not rest:
        ds = folder_source(text)
    else:
        raise DataError(f"data {text!r}: unknown data source; use folder:PATH, cmu-faces:PATH, "
                        f"mnist:PATH, fashion-mnist:PATH or digits{closest(kind, SOURCE_KINDS)}", param="data")
    if label is not None and ds.source["kind"] != "cmu-faces":
        raise DataError(f"label {label!r}: only cmu-faces sources take one ({', '.join(FACE_LABELS)})", param="label")
    return ds
