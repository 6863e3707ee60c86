"""``folder:PATH``: one subfolder per class; ``PATH/train`` and ``PATH/test`` (each with class
subfolders) are kept as the given split."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import DataError
from ..images import is_image_path
from .decode import check_classes, decode_files, stack_images
from .imageset import ImageSet


def folder_source(path: str | os.PathLike, *, size: tuple[int, int] | None = None,
                  mode: str | None = None) -> ImageSet:
    """Images in ``PATH/<class>/`` (or ``PATH/{train,test}/<class>/`` as the given split).

    Args:
        path: the folder; hidden subfolders are not classes.
        size: ``(w, h)`` every image is resized to; by default the most common size.
        mode: ``"L"`` or ``"RGB"`` forces the channels; by default grayscale stays one channel
            unless any image has colour.

    Returns:
        ImageSet: ids are the files' paths relative to ``path``; unreadable files are skipped and
            named; classes without a readable image are dropped.

    Raises:
        DataError: no such folder, no class subfolders or images, none readable, fewer than two
            classes, or a train/test split with an empty part.
    """
    root = Path(path)
    what = f"folder:{root}"
    if not root.exists():
        raise DataError(f"{what}: no such folder")
    if not root.is_dir():
        raise DataError(f"{what}: not a folder (want one subfolder per class)")
    splits = [d for d in ("train", "test") if (root / d).is_dir()]
    parts: list[tuple[str | None, Path]] = \
        [(s, root / s) for s in splits] if splits == ["train", "test"] else [(None, root)]
    class_names = sorted({d.name for _, base in parts for d in base.iterdir()
                          if d.is_dir() and not d.name.startswith(".")})
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
    arrays, bad = decode_files(paths, mode, root)
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if not keep:
        raise DataError(f"{what}: none of its {len(paths)} image files could be read")
    labels = [labels[i] for i in keep]
    check_classes(labels, class_names, what)
    used = sorted(set(labels))
    remap = {old: new for new, old in enumerate(used)}
    images = stack_images([arrays[i] for i in keep], size, what)  # type: ignore[misc]
    ids = [paths[i].relative_to(root).as_posix() for i in keep]
    given = [split[i] for i in keep] if splits == ["train", "test"] else None
    if given is not None and ("test" not in given or "train" not in given):
        raise DataError(f"{what}: its train/ or test/ split holds no readable images")
    return ImageSet(images, torch.tensor([remap[v] for v in labels], dtype=torch.long),
                    [class_names[i] for i in used], ids,
                    {"kind": "folder", "path": str(root.resolve()), "spec": f"folder:{root}"},
                    given_split=given, skipped=len(bad), skipped_files=bad)
