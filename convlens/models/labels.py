"""Class names: ImageNet's from timm, readable words rather than ids."""

from __future__ import annotations

import csv
import importlib.util
from functools import lru_cache
from pathlib import Path

from ..errors import TargetError, closest


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class descriptions, e.g. ``'tabby, tabby cat'`` (timm's lists, read from
    its package files without importing timm, which imports torchvision)."""
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
    """ImageNet's names for 1000-way heads, ``class 0``... otherwise."""
    if num_classes == 1000:
        return list(imagenet_labels())
    return [f"class {i}" for i in range(num_classes)]


def resolve_label(label: str | int, class_names: list[str]) -> int:
    """Class index for an index or a label (case-insensitive, any comma-separated synonym).

    >>> resolve_label("Tabby Cat", ["dog", "tabby, tabby cat"])
    1
    """
    if isinstance(label, int) or (isinstance(label, str) and label.strip().lstrip("-").isdigit()):
        idx = int(label)
        if not 0 <= idx < len(class_names):
            raise TargetError(f"class index {idx} is out of range: the model has {len(class_names)} classes (0-{len(class_names) - 1})")
        return idx
    want = " ".join(str(label).lower().replace("_", " ").split())
    for i, name in enumerate(class_names):
        full = name.lower()
        if full == want or want in (s.strip() for s in full.split(",")):
            return i
    synonyms = {s.strip(): s.strip() for n in class_names for s in n.split(",")}
    raise TargetError(f"unknown class label {label!r}{closest(want, synonyms.keys())}")
