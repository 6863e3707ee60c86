"""``mnist:PATH`` / ``fashion-mnist:PATH``: the idx ``.gz`` (or plain) files of MNIST or
Fashion-MNIST (its class names). The ``train-*`` and ``t10k-*`` pairs are the given split, a folder
with one pair is read as the whole set (and ``describe()`` says so); a folder without them is
downloaded into by torchvision's dataset code when online (:func:`fetch_mnist`)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .imageset import ImageSet


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
    """The folder holding the idx files of a kind of MNIST, downloaded when they are not there.

    ``path`` itself or torchvision's layout ``path/FashionMNIST/raw`` is looked in; when neither has
    them, torchvision's dataset code downloads them there (online; it checks their MD5 sums).

    Args:
        path: the folder.
        kind: ``mnist`` or ``fashion-mnist``.

    Returns:
        Path: the folder holding the files.

    Raises:
        DataError: ``path`` is a file, or the files are not there and cannot be downloaded (offline,
            or ``CONVLENS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` in the environment: no download is
            tried); it says which files to put where.
    """
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

    Args:
        path: the folder holding the idx files (:func:`fetch_mnist` finds or downloads them).
        kind: ``mnist`` (class names ``0``..``9``) or ``fashion-mnist`` (:data:`FASHION_CLASSES`).

    Returns:
        ImageSet: grey 28x28 images.

    Raises:
        DataError: a bad ``kind``, no such folder, missing, truncated or mismatched idx files, or
            pairs other than one or a train and a test pair.
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
