"""The objects' regions for ``pointing`` and ``energy``: boxes and mask images, read, matched to the
images scored, and mapped onto the model's input grid.

Boxes are in original-image pixels ``[x0, y0, x1, y1]`` (x to the right, y down; x1/y1 exclusive),
mapped onto the model's input grid through the preprocessing geometry (``config.crop_box``):
a dict / JSON file ``{"image.png": [[x0, y0, x1, y1], ...]}`` (for every target), or per target
``{"image.png": {"243": [[...]], "tabby cat": [[...]], "*": [[...]]}}`` (``"*"``: every target), or a CSV file
with the columns ``image,x0,y0,x1,y1`` and optionally ``target``. Images are matched by path, file name, then
stem. A boxes file may cover more images than those scored (one annotation file for a whole data set):
the other entries are ignored. Every image scored needs an entry (else one line naming it: the
pointing game has nothing to point at); a target that its image's entry does not name is left out
of ``pointing``/``energy`` (``Scores.has_boxes``), as long as one target has boxes.

Regions may also be **mask images** (any picture the size of its image; non-zero pixels are the
object, alpha respected): a folder of masks named after the images (``masks/cat.png`` for
``cat.jpg``: matched by path, file name, then stem), or a path instead of a box list in the JSON
(``{"cat.jpg": "masks/cat.png"}``, ``{"both.png": {"243": "dog.png", "282": "cat.png"}}``; relative
to the JSON file). An input pixel is inside a mask when the original pixel under its centre is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from ...errors import ConvlensError, SpecError, closest
from ...images import list_images, load_image

Boxes = dict[str, Any]  # image key -> list of regions, or {target: list of regions}


@dataclass(frozen=True, eq=False)
class RegionMask:
    """An object's region as a mask image in original pixels: ``inside`` is ``(h, w)`` bool."""

    inside: np.ndarray
    source: str

    def __repr__(self) -> str:
        return f"RegionMask({self.source!r}, {self.inside.shape[1]}x{self.inside.shape[0]})"


def read_mask(path: Any) -> RegionMask:
    """A mask image (non-zero pixels, or opaque ones when it has alpha, are the object).

    Args:
        path: the mask image's file.

    Returns:
        RegionMask: the object's pixels, in the mask's (the original image's) size.

    Raises:
        SpecError: a mask that cannot be read or that has no object pixel (``param="boxes"``).
    """
    try:
        img = load_image(path, mode=None)
    except ConvlensError as e:
        raise SpecError(f"boxes: mask {e}", param="boxes") from None
    arr = np.asarray(img.convert("RGBA") if img.mode in ("RGBA", "LA", "PA") else img.convert("L"))
    inside = arr[..., 3] > 0 if arr.ndim == 3 else arr > 0
    if arr.ndim == 3:
        inside &= arr[..., :3].max(-1) > 0
    if not inside.any():
        raise SpecError(f"boxes: mask {path} is empty (no non-zero pixel)", param="boxes")
    return RegionMask(inside, str(path))


def _region(b: Any, where: str, root: Path | None) -> list[float] | RegionMask:
    if isinstance(b, RegionMask):
        return b
    if isinstance(b, (str, os.PathLike)) and root is not None:
        if not os.path.isfile(root / b):  # (False, not OSError, for a name too long)
            raise SpecError(f"boxes: {where}: expected a list of [x0, y0, x1, y1] or a mask image file ({b} does "
                            "not exist)", param="boxes")
        return read_mask(root / b)
    return _check_box(b, where)


def _regions(val: Any, where: str, root: Path | None) -> list[list[float] | RegionMask]:
    if isinstance(val, RegionMask) or (isinstance(val, (str, os.PathLike)) and root is not None):
        return [_region(val, where, root)]
    if isinstance(val, (list, tuple)):
        if len(val) == 4 and all(isinstance(v, (int, float)) for v in val):
            val = [val]  # one box given bare
        return [_region(b, where, root) for b in val]
    raise SpecError(f"boxes: {where}: expected a list of [x0, y0, x1, y1] or a mask image (got "
                    f"{type(val).__name__})", param="boxes")


def _check_box(b: Any, where: str) -> list[float]:
    try:
        vals = [float(v) for v in b]
    except (TypeError, ValueError):
        raise SpecError(f"boxes: {where}: a box is [x0, y0, x1, y1] (got {b!r})", param="boxes") from None
    except OverflowError:  # an int beyond float range (10**400)
        raise SpecError(f"boxes: {where}: a box has a number too large for a float", param="boxes") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise SpecError(f"boxes: {where}: a box is four numbers [x0, y0, x1, y1] (got {b!r})", param="boxes")
    if vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise SpecError(f"boxes: {where}: box {b!r} is empty (x1 must exceed x0 and y1 exceed y0)", param="boxes")
    return vals


def load_boxes(boxes: Any) -> Boxes:
    """Regions from a dict, a JSON or CSV file, or a folder of mask images (see the module doc),
    checked for shape; mask paths in a JSON file are read relative to it.

    Args:
        boxes: ``None``, a dict ``{image: regions}`` or ``{image: {target: regions}}`` (mask paths
            relative to the working directory), a ``.json`` or ``.csv`` file, or a folder of masks.

    Returns:
        Boxes: image key -> a list of regions (``[x0, y0, x1, y1]`` lists or :class:`RegionMask`), or
            target key -> such a list; ``{}`` for ``None``.

    Raises:
        SpecError: a missing or unreadable file, a file that is not JSON or a CSV with the needed
            columns, an empty folder or mask, or a malformed or empty box (``param="boxes"``).
    """
    if boxes is None:
        return {}
    root: Path | None = Path(".")  # mask paths given in a dict are relative to the working directory
    if isinstance(boxes, (str, os.PathLike)):
        path = Path(boxes)
        if os.path.isdir(path):  # (os.path: False, not OSError, for a name too long)
            return _boxes_from_folder(path, boxes)
        boxes, root = _read_boxes_file(path, boxes)
    if not isinstance(boxes, dict):
        raise SpecError('boxes must map image names to lists of [x0, y0, x1, y1] ({"image.png": [[...]]})',
                        param="boxes")
    out: Boxes = {}
    for key, val in boxes.items():
        if isinstance(val, dict):
            out[str(key)] = {str(t): _regions(bs or [], f"{key} target {t}", root) for t, bs in val.items()}
        else:
            out[str(key)] = _regions(val, str(key), root)
    return out


def _boxes_from_folder(path: Path, given: Any) -> Boxes:
    """One mask per image file in the folder, keyed by its path under the folder."""
    try:
        found = list_images([path])
    except ConvlensError:
        found = []
    if not found:
        raise SpecError(f"boxes folder {given} holds no mask image", param="boxes")
    return {str(p.relative_to(path)): [read_mask(p)] for p in found}


def _read_boxes_file(path: Path, given: Any) -> tuple[Any, Path | None]:
    """(the file's content as a dict, the folder its mask paths are relative to: None for a CSV)."""
    if not os.path.isfile(path):
        raise SpecError(f"boxes file {given} does not exist", param="boxes")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SpecError(f"boxes file {given} cannot be read ({e.strerror or e})", param="boxes") from None
    if path.suffix.lower() == ".csv":
        return _csv_boxes(text, given), None  # CSV cells are numbers, never mask paths
    try:
        return json.loads(text), path.parent
    except json.JSONDecodeError as e:
        raise SpecError(f"boxes file {given} is not valid JSON ({e.msg}, line {e.lineno})", param="boxes") from None
    except (ValueError, RecursionError):  # a number of over 4300 digits, nesting too deep
        raise SpecError(f"boxes file {given} is not JSON that can be read (a number too long or "
                        "lists nested too deep)", param="boxes") from None


def _csv_boxes(text: str, given: Any) -> dict[str, Any]:
    """Rows ``image,x0,y0,x1,y1[,target]`` as ``{image: boxes}`` or ``{image: {target: boxes}}``."""
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:  # a field over csv's size limit...
        raise SpecError(f"boxes file {given} is not a readable CSV ({e})", param="boxes") from None
    need = {"image", "x0", "y0", "x1", "y1"}
    if not rows or not need <= set(rows[0]):
        raise SpecError(f"boxes file {given}: a CSV needs the columns image,x0,y0,x1,y1 (and optionally "
                        "target)", param="boxes")
    out: dict[str, Any] = {}
    for r in rows:
        b = [r["x0"], r["y0"], r["x1"], r["y1"]]
        out.setdefault(r["image"], {}).setdefault((r.get("target") or "").strip() or "*", []).append(b)
    return {k: (v["*"] if set(v) == {"*"} else v) for k, v in out.items()}


def match_boxes(boxes: Boxes, names: Sequence[str], *, require: bool = False) -> list[Any]:
    """Each image's boxes entry (by path, then file name, then stem), or None.

    A boxes table may cover more images than those scored (one annotation file for a whole data
    set): entries for other images are ignored.  It must match at least one of them (else one line
    naming a key that matched nothing, with the closest image name).

    Args:
        boxes: regions per image key, as :func:`load_boxes` returns them.
        names: the names of the images scored.
        require: an image with no entry is an error naming it too (the pointing game has nothing
            to point at without its box).

    Returns:
        list[Any]: per image, its entry of ``boxes`` (the first when two keys match it) or None.

    Raises:
        SpecError: no entry matches any image, or (``require``) an image has no entry.
    """
    by_path = {str(Path(n)): i for i, n in enumerate(names)}
    by_name: dict[str, int] = {}
    by_stem: dict[str, int] = {}
    for i, n in enumerate(names):
        by_name.setdefault(Path(n).name, i)
        by_stem.setdefault(Path(n).stem, i)
    found: list[Any] = [None] * len(names)
    unmatched: list[str] = []
    for key, val in boxes.items():
        i = by_path.get(str(Path(key)), by_name.get(Path(key).name, by_stem.get(Path(key).stem)))
        if i is None:
            unmatched.append(str(key))
        elif found[i] is None:  # two entries for one image: the first is kept
            found[i] = val
    if boxes and all(v is None for v in found):
        known = [Path(n).name for n in names]
        key = unmatched[0]
        raise SpecError(f"boxes given for {key!r}, which is not among the images{closest(Path(key).name, known)}"
                        f" (none of the {len(boxes)} entries matches an image scored)", param="boxes")
    if require:
        missing = [n for n, v in zip(names, found) if v is None]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SpecError(f"boxes: no box for image {missing[0]!r}{more}; add it to the boxes file, or score "
                            "only the images it covers", param="boxes")
    return found


def target_boxes(entry: Any, index: int, label: str, image: str) -> list[list[float]] | None:
    """The regions of one target in one image's entry.

    Args:
        entry: the image's entry (as :func:`match_boxes` found it): a list of regions for every
            target, ``{target: regions}``, or None.
        index: the target's class index.
        label: the target's class label (its first comma-separated name matches too).
        image: the image's name.

    Returns:
        list[list[float]] | None: the regions keyed ``"*"`` plus those keyed by the class index or
            label, or None when there are none.
    """
    if entry is None:
        return None
    if isinstance(entry, list):
        return entry
    found = list(entry.get("*", []))  # boxes for every target ("*", or a CSV row without a target)
    for key, bs in entry.items():
        k = key.strip().lower()
        if k == str(index) or k == label.lower() or k == label.split(",")[0].strip().lower():
            found.extend(bs)
    return found or None


def _grid(config: Any, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Original x of each input column, original y of each input row (pixel centres)."""
    w0, h0 = size
    x0c, y0c, x1c, y1c = config.crop_box(w0, h0)
    H, W = config.height, config.width
    ox = x0c + (torch.arange(W, dtype=torch.float64) + 0.5) * (x1c - x0c) / W
    oy = y0c + (torch.arange(H, dtype=torch.float64) + 0.5) * (y1c - y0c) / H
    return ox, oy


def _sample(a: np.ndarray, ox: torch.Tensor, oy: torch.Tensor) -> torch.Tensor:
    """``a`` (h, w) in original pixels read at the input grid (the pixel under each centre)."""
    cols = ox.floor().long().clamp(0, a.shape[1] - 1)
    rows = oy.floor().long().clamp(0, a.shape[0] - 1)
    return torch.from_numpy(np.ascontiguousarray(a))[rows[:, None], cols[None, :]]


def _check_mask_size(m: RegionMask, size: tuple[int, int], image: str) -> None:
    if (m.inside.shape[1], m.inside.shape[0]) != tuple(size):
        raise SpecError(f"boxes: {image}: mask {m.source} is {m.inside.shape[1]} x {m.inside.shape[0]} pixels, the "
                        f"image {size[0]} x {size[1]}", param="boxes")


def box_mask(config: Any, size: tuple[int, int], boxes: list[Any], image: str) -> torch.Tensor:
    """``(H, W)`` bool mask on the model's input grid of regions in original pixels (``size`` = (w, h)).

    An input pixel is inside when its centre, mapped back to the original picture through
    ``config.crop_box``, lies inside a box (x with the width, y with the height) or on a mask pixel.

    Args:
        config: the model's preprocessing (``height``, ``width``, ``crop_box``).
        size: the original image's ``(w, h)``.
        boxes: the regions, ``[x0, y0, x1, y1]`` lists or :class:`RegionMask`.
        image: the image's name, for the messages.

    Returns:
        torch.Tensor: the ``(H, W)`` bool mask.

    Raises:
        SpecError: a box outside the image, a mask of another size, or a region that the model's
            crop cuts off entirely.
    """
    w0, h0 = size
    ox, oy = _grid(config, size)
    mask = torch.zeros(config.height, config.width, dtype=torch.bool)
    for b in boxes:
        if isinstance(b, RegionMask):
            _check_mask_size(b, size, image)
            inside = _sample(b.inside, ox, oy)
            what = f"mask {b.source}"
        else:
            x0, y0, x1, y1 = b
            if x0 < 0 or y0 < 0 or x1 > w0 or y1 > h0:
                raise SpecError(f"boxes: {image}: box {[round(v, 2) for v in b]} lies outside the image "
                                f"({w0} x {h0} pixels, x < {w0}, y < {h0})", param="boxes")
            inside = ((oy >= y0) & (oy < y1))[:, None] & ((ox >= x0) & (ox < x1))[None, :]
            what = f"box {[round(v, 2) for v in b]}"
        if not bool(inside.any()):
            raise SpecError(f"boxes: {image}: {what} lies where the model's crop cut the picture off", param="boxes")
        mask |= inside
    return mask


def pointing_energy(maps: torch.Tensor, masks: torch.Tensor, centres: tuple[torch.Tensor, torch.Tensor],
                    dist: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hit (K,), energy (K,))`` of maps ``(K, H, W)`` against masks ``(K, H, W)``.

    Args:
        maps: ``(K, H, W)`` maps.
        masks: ``(K, H, W)`` bool, the regions on the input grid (:func:`box_mask`).
        centres: unused (the verb passes ``(None, None)``).
        dist: ``(K, H, W)``, each input pixel's distance (original pixels) to the nearest box minus
            the tolerance (:func:`box_distance`); a hit is a peak with ``dist <= 0``. None: a hit is a
            peak inside ``masks``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``hit`` (1. or 0. per map) and ``energy`` (the share of
            each map's mass inside its mask).
    """
    flat = maps.flatten(1).float()
    peak = flat.argmax(1)
    if dist is None:
        hit = masks.flatten(1).gather(1, peak[:, None])[:, 0].float()
    else:
        hit = dist.flatten(1).gather(1, peak[:, None])[:, 0].le(0).float()
    energy = (flat * masks.flatten(1).float()).sum(1) / flat.sum(1).clamp_min(1e-12)
    return hit, energy


def box_distance(config: Any, size: tuple[int, int], boxes: list[Any]) -> torch.Tensor:
    """Distance in original pixels from each input pixel's centre to the nearest region.

    Args:
        config: the model's preprocessing (``height``, ``width``, ``crop_box``).
        size: the original image's ``(w, h)``.
        boxes: the regions, ``[x0, y0, x1, y1]`` lists or :class:`RegionMask`.

    Returns:
        torch.Tensor: ``(H, W)`` float64, 0 inside a region.
    """
    ox, oy = _grid(config, size)
    best = torch.full((config.height, config.width), float("inf"), dtype=torch.float64)
    for b in boxes:
        if isinstance(b, RegionMask):
            d = _sample(ndimage.distance_transform_edt(~b.inside), ox, oy).double()
        else:
            x0, y0, x1, y1 = b
            dx = (x0 - ox).clamp_min(0) + (ox - x1).clamp_min(0)
            dy = (y0 - oy).clamp_min(0) + (oy - y1).clamp_min(0)
            d = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        best = torch.minimum(best, d)
    return best
