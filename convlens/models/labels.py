"""Class names: ImageNet's from timm (readable words rather than ids), the readers of class-name
files (``--classes``, ``classes.txt`` beside a Keras model) and the lookup of a label by name."""

from __future__ import annotations

import csv
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import SpecError, TargetError, closest
from ..options import parse_json

#: The files beside a model file that give its class names, in the order they are looked for
#: (``NAME`` is the model file's stem).
SIDE_FILES = ("{stem}.classes.json", "{stem}.classes.txt", "classes.json", "classes.txt")


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class descriptions, e.g. ``'tabby, tabby cat'``.

    Read from timm's package files without importing timm (which imports torchvision); timm's
    ``ImageNetInfo`` when the files are not where they used to be.

    Returns:
        tuple[str, ...]: the descriptions in class-index order.
    """
    spec = importlib.util.find_spec("timm")
    info_dir = Path(spec.origin).parent / "data" / "_info" if spec and spec.origin else None
    if info_dir is not None and (info_dir / "imagenet_synsets.txt").is_file() \
            and (info_dir / "imagenet_synset_to_lemma.txt").is_file():
        synsets = (info_dir / "imagenet_synsets.txt").read_text("utf-8").splitlines()
        lemmas = dict(csv.reader((info_dir / "imagenet_synset_to_lemma.txt").read_text("utf-8").splitlines(),
                                 delimiter="\t"))
        if len(synsets) == 1000 and all(s in lemmas for s in synsets):
            return tuple(lemmas[s] for s in synsets)
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def default_labels(num_classes: int) -> list[str]:
    """The class names a model gets when nothing names its classes.

    Args:
        num_classes: the number of the model's outputs.

    Returns:
        list[str]: ImageNet's names for a 1000-way head, else ``class 0``, ``class 1``...
    """
    if num_classes == 1000:
        return list(imagenet_labels())
    return [f"class {i}" for i in range(num_classes)]


def resolve_label(label: str | int, class_names: list[str]) -> int:
    """The class index an index or a label names.

    >>> resolve_label("Tabby Cat", ["dog", "tabby, tabby cat"])
    1

    Args:
        label: a class index (an int or a string of digits) or a name, matched case-insensitively
            against the whole name or any of its comma-separated synonyms (``_`` reads as a space).
        class_names: the model's class names.

    Returns:
        int: the class index.

    Raises:
        TargetError: an index out of range, or an unknown name (the closest synonym suggested).
    """
    if isinstance(label, int) or (isinstance(label, str) and label.strip().lstrip("-").isdigit()):
        idx = int(label)
        if not 0 <= idx < len(class_names):
            raise TargetError(f"class index {idx} is out of range: the model has {len(class_names)} classes "
                              f"(0-{len(class_names) - 1})")
        return idx
    want = " ".join(str(label).lower().replace("_", " ").split())
    for i, name in enumerate(class_names):
        full = name.lower()
        if full == want or want in (s.strip() for s in full.split(",")):
            return i
    synonyms = {s.strip(): s.strip() for n in class_names for s in n.split(",")}
    raise TargetError(f"unknown class label {label!r}{closest(want, synonyms.keys())}")


# -- class-name files ----------------------------------------------------------
def read_class_names(path: str | os.PathLike, n: int | None = None, param: str = "classes") -> list[str]:
    """Class names from a file.

    Args:
        path: a ``.json`` file (a list, ``{"0": "cat"}``, ``{"cat": 0}`` as Keras' ``class_indices``,
            or any of these under a ``"class_names"`` key) or a text file (one name per line, blank
            lines skipped).
        n: the model's number of outputs, which the number of names must equal (None: any number).
        param: the parameter the errors name.

    Returns:
        list[str]: the names in class-index order.

    Raises:
        SpecError: a missing or unreadable file, invalid JSON, a layout not listed above, no names,
            or a number of names other than ``n``.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{param} {path}: no such file", param=param)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{param} {path}: cannot read it as text ({exc.__class__.__name__})", param=param) from None
    if path.suffix.lower() == ".json":
        try:
            data = parse_json(text, "json", SpecError)  # nesting and non-finite numbers checked too
        except SpecError as exc:
            raise SpecError(f"{param} {path}: not valid JSON ({str(exc).removeprefix('json: ')})", param=param) \
                from None
        names = _json_names(data, path, param)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise SpecError(f"{param} {path}: no class names in it", param=param)
    if n is not None and len(names) != n:
        raise SpecError(f"{param} {path}: {len(names)} class names for a model with {n} outputs", param=param)
    return names


def _json_names(data: Any, path: Path, param: str) -> list[str]:
    if isinstance(data, dict) and "class_names" in data:
        data = data["class_names"]
    if isinstance(data, list) and all(isinstance(v, (str, int, float)) for v in data):
        return [str(v) for v in data]
    if isinstance(data, dict) and data:
        try:
            if all(str(k).strip().lstrip("-").isdigit() for k in data):  # {"0": "cat"}
                pairs = {int(k): str(v) for k, v in data.items()}
            else:  # {"cat": 0}, as Keras' class_indices
                pairs = {int(v): str(k) for k, v in data.items()}
        except (TypeError, ValueError):
            pairs = {}
        if pairs and sorted(pairs) == list(range(len(pairs))):
            return [pairs[i] for i in range(len(pairs))]
    raise SpecError(f"{param} {path}: expected a list of names, {{index: name}} or {{name: index}}", param=param)


def side_class_names(model_path: Path, n: int) -> list[str] | None:
    """Class names from a file beside a model file (:data:`SIDE_FILES`, the first found).

    Args:
        model_path: the model file; ``NAME.classes.json``/``.txt`` (``NAME`` its stem), then
            ``classes.json``/``classes.txt`` are looked for in its folder.
        n: the model's number of outputs, which the number of names must equal.

    Returns:
        list[str] | None: the names, or None when there is no such file.

    Raises:
        SpecError: the file found cannot be read as class names (naming ``model``).
    """
    folder, stem = model_path.parent, model_path.stem
    for pattern in SIDE_FILES:
        p = folder / pattern.format(stem=stem)
        if p.is_file():
            return read_class_names(p, n, param="model")
    return None
