"""``cmu-faces:PATH``: the CMU face images (``user_pose_expression_eyes[_scale].pgm``), labelled by
identity, eyes, pose or expression, at scale 1 (128x120), 2 (64x60, default) or 4 (32x30); the
glitched ``.bad`` files are skipped and counted."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import DataError, closest
from .decode import check_classes, decode_files, stack_images
from .imageset import ImageSet

FACE_LABELS = ("identity", "eyes", "pose", "expression")
FACE_SCALES = {1: "", 2: "_2", 4: "_4"}


def cmu_faces_source(path: str | os.PathLike, *, label: str = "identity", scale: int = 2) -> ImageSet:
    """The CMU face images (``user_pose_expression_eyes[_scale].pgm``) with one label kind.

    Args:
        path: the folder holding the images (searched recursively).
        label: what a class is: one of :data:`FACE_LABELS`.
        scale: 1 (128x120), 2 (64x60) or 4 (32x30): which of the files is read.

    Returns:
        ImageSet: grey images, classes sorted by name; the ``.bad`` and unreadable files skipped
            and named.

    Raises:
        DataError: a bad ``label`` or ``scale`` (naming it), no such folder, no face images, none
            readable, or fewer than two classes.
    """
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
    arrays, unreadable = decode_files([p for p, _ in files], "L", root)
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if not keep:
        raise DataError(f"{what}: none of its {len(files)} face images could be read")
    class_names = sorted({names[i] for i in keep})
    labels = [class_names.index(names[i]) for i in keep]
    check_classes(labels, class_names, what)
    images = stack_images([arrays[i] for i in keep], None, what)  # type: ignore[misc]
    skipped = bad_files + unreadable
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), class_names,
                    [files[i][0].relative_to(root).as_posix() for i in keep],
                    {"kind": "cmu-faces", "path": str(root.resolve()), "label": label, "scale": scale,
                     "spec": f"cmu-faces:{root}"},
                    skipped=len(skipped), skipped_files=skipped)
