"""The in-memory data set every source decodes into: :class:`ImageSet`, one ``uint8`` tensor
``(N, C, H, W)`` with integer labels and the class names, so training never touches the disk again;
a View whose figure is a labelled gallery, one row (or more) per class."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from PIL import Image

from ..errors import DataError
from ..render.files import OutDir, Saved
from ..render.grid import grid
from ..view import View

#: the most images a gallery draws by default (the course's 624 faces fit: all of them)
GALLERY_LIMIT = 640
#: the most thumbnails in one gallery row (a class with more wraps onto further rows)
GALLERY_COLS = 32


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
        """The number of items of each class.

        Returns:
            dict[str, int]: class name -> count, in class order.
        """
        c = torch.bincount(self.labels, minlength=self.num_classes).tolist()
        return dict(zip(self.class_names, c))

    def subset(self, index: Sequence[int] | torch.Tensor) -> "ImageSet":
        """Some of the items, with the same class names and source.

        Args:
            index: the items' positions, in the order wanted.

        Returns:
            ImageSet: a new set of those items (their ids and given split kept).
        """
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], list(self.class_names),
                        [self.ids[i] for i in idx.tolist()], dict(self.source),
                        None if self.given_split is None else [self.given_split[i] for i in idx.tolist()])

    def to_dict(self) -> dict[str, Any]:
        """What the set holds, without the pixels.

        Returns:
            dict[str, Any]: JSON-ready: the source, size, classes and their counts, the skipped
                files (the first 20), the description and the given split.
        """
        c, h, w = self.input_size
        out: dict[str, Any] = {"source": dict(self.source), "n": len(self), "height": h, "width": w, "channels": c,
                               "class_names": list(self.class_names), "counts": self.counts(),
                               "skipped": self.skipped, "skipped_files": list(self.skipped_files[:20]),
                               "description": self.describe()}
        if self.given_split is not None:
            out["given_split"] = dict(Counter(self.given_split))
        return out

    def gallery_items(self, limit: int | None = GALLERY_LIMIT, seed: int = 0) -> list[int]:
        """The items a gallery shows, by class then in order.

        Args:
            limit: show all items when there are at most this many (None: no limit), else a seeded
                sample of about ``limit`` spread evenly over the classes.
            seed: the sample's seed.

        Returns:
            list[int]: the items' positions.

        Raises:
            DataError: a ``limit`` that is not a whole number of at least 1.
        """
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
        (nearest neighbours: 28x28 digits stay crisp), large ones shrunk to ``cell`` pixels.

        Args:
            limit: see :meth:`gallery_items`.
            cols: thumbnails per row (default: the largest class's count, at most
                :data:`GALLERY_COLS`).
            cell: the thumbnails' longer side in pixels (default: 48 to 96, by the images' size).
            seed: the sample's seed.
            **_opts: other figure options, ignored (the View contract passes them to every view).

        Returns:
            Image.Image: the gallery.

        Raises:
            DataError: an empty set, or ``cols`` below 1.
        """
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
        """One item as a picture.

        Args:
            i: the item's position.

        Returns:
            Image.Image: the image, grey or RGB.
        """
        a = self.images[int(i)].permute(1, 2, 0).numpy()
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)

    def save(self, out_dir: str | os.PathLike, limit: int | None = GALLERY_LIMIT, **opts: Any) -> Saved:
        """Write the gallery and the description.

        Args:
            out_dir: the folder written.
            limit: see :meth:`gallery_items`.
            **opts: figure options (see :meth:`figure`).

        Returns:
            Saved: ``gallery.png`` (role ``gallery``, :meth:`figure`) and ``data.json`` (role
                ``json``, :meth:`to_dict`).
        """
        out = OutDir(out_dir)
        out.png("gallery", "gallery.png", self.figure(limit, **opts))
        out.json("json", "data.json", self.to_dict())
        return out.saved()

    def describe(self) -> str:
        """One line about the set.

        Returns:
            str: its size, image size, classes and source, what was read and what skipped.
        """
        c, h, w = self.input_size
        text = (f"{len(self)} images of {w}x{h}x{c}, {self.num_classes} classes "
                f"from {self.source.get('spec', self.source.get('kind'))}")
        if self.source.get("read"):
            text += f" ({self.source['read']})"
        if self.skipped:
            text += f"; skipped {self.skipped} unreadable file(s)"
        return text
