"""Seeded, stratified train/validation/test splits, saved as id lists.

>>> from convlens.data import load_source
>>> ds = load_source("digits")
>>> s = make_split(ds, seed=0)
>>> len(s.train), len(s.val), len(s.test)
(1258, 180, 359)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, RunError
from .imageset import ImageSet


@dataclass
class Split:
    """Index tensors into an :class:`ImageSet` for the three parts."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    given_test: bool = False

    def to_ids(self, ds: ImageSet) -> dict[str, Any]:
        return {"given_test": self.given_test,
                **{k: [ds.ids[i] for i in getattr(self, k).tolist()] for k in ("train", "val", "test")}}

    def save(self, path: str | os.PathLike, ds: ImageSet) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_ids(ds)))
        return path

    @classmethod
    def from_ids(cls, ids: dict[str, Any], ds: ImageSet, what: str = "splits") -> "Split":
        where = {v: i for i, v in enumerate(ds.ids)}
        parts = {}
        for k in ("train", "val", "test"):
            missing = [v for v in ids.get(k, []) if v not in where]
            if missing:
                raise RunError(f"{what}: {len(missing)} {k} item(s) are no longer in the data source "
                               f"(first: {missing[0]}); the data changed since training")
            parts[k] = torch.tensor([where[v] for v in ids.get(k, [])], dtype=torch.long)
        return cls(parts["train"], parts["val"], parts["test"], bool(ids.get("given_test")))

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _stratified(idx: np.ndarray, y: np.ndarray, frac: float, seed: int, what: str, param: str = "test",
                given: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, part) with ``part`` about ``frac`` of it, stratified by ``y``.

    ``param``/``given``: the option the part comes from and its value as the user gave it (named
    in the error when ``idx`` is too small to set that part aside and keep some for the rest).
    """
    from sklearn.model_selection import train_test_split

    if frac <= 0:
        return idx, idx[:0]
    given = frac if given is None else given
    n_part = int(round(frac * len(idx)))
    if n_part < 1 or n_part >= len(idx):
        part = "validation" if param == "val" else "test"
        raise DataError(f"{what}: {len(idx)} images are too few for {param}={given:g} (a {part} split of "
                        f"{frac * len(idx):.1f} images, with some left to train on); pass {param}=0 for no "
                        f"{part} split, or give more images", param=param)
    n_cls = len(np.unique(y))
    counts = np.bincount(y)
    # stratify when every class can appear on both sides; else a plain seeded shuffle
    stratify = None if (counts[counts > 0].min() < 2 or n_part < n_cls or len(idx) - n_part < n_cls) else y
    rest, part = train_test_split(idx, test_size=n_part, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(part)


def make_split(ds: ImageSet, *, val: float = 0.1, test: float = 0.2, seed: int = 0) -> Split:
    """Stratified split: 70/10/20 by default, or the source's own train/test with ``val`` of train.

    ``val`` and ``test`` are fractions of the whole set (``val`` of the training part when
    the source gives its own test split).
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions val={val}, test={test}: each in [0, 1) and together under 1",
                        param="val" if not 0 <= val < 1 or 0 <= test < 1 else "test")
    y = ds.labels.numpy()
    idx = np.arange(len(ds))
    what = ds.source.get("spec", "data")
    if ds.given_split is not None:
        given = np.array(ds.given_split)
        train_idx, test_idx = idx[given == "train"], idx[given == "test"]
        train_idx, val_idx = _stratified(train_idx, y[train_idx], val, seed, what, "val", val)
        given_test = True
    else:
        rest, test_idx = _stratified(idx, y, test, seed, what, "test", test)
        frac = val / (1 - test) if test < 1 else 0
        train_idx, val_idx = _stratified(rest, y[rest], frac, seed, what, "val", val)
        given_test = False
    if len(train_idx) < 2:  # one image cannot train (batch norm needs two in a batch)
        raise DataError(f"{what}: {len(train_idx)} image(s) left for training after the test and val splits "
                        f"({len(test_idx)} and {len(val_idx)}); lower test or val, or give more images",
                        param="test" if len(test_idx) else "val")
    t = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Split(t(train_idx), t(val_idx), t(test_idx), given_test)
