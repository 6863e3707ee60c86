"""Reading images the way people have them.

``load_image`` accepts a path, raw bytes, a file object, a PIL image, a NumPy
array or a tensor and returns a PIL image in ``RGB`` (default) or ``L`` mode:

* EXIF orientation is applied (phone photos come out upright);
* 16-bit and high-maxval images (``I;16`` PNG/TIFF, PGM/PPM with maxval > 255)
  are scaled by their real range instead of being clipped at 255;
* palette, CMYK, LA/RGBA (composited on white) are converted;
* GIF and other animations give their first frame;
* truncated files, non-images, empty files and decompression bombs raise
  :class:`~convlens.errors.ImageError` naming the file.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Images larger than this many pixels are refused as possible decompression bombs.
MAX_PIXELS = 64_000_000

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".pgm", ".ppm", ".pbm", ".pnm",
}

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray, Any]
T = TypeVar("T")


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file name looks like an image we can read (by suffix)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _describe(source: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<image data>"


def _pgm_maxval(fp: BinaryIO) -> int | None:
    """The maxval of a PGM/PPM header (P2, P3, P5, P6), or None."""
    pos = fp.tell()
    try:
        head = fp.read(512)
    finally:
        fp.seek(pos)
    if len(head) < 2 or head[:1] != b"P" or head[1:2] not in b"2356":
        return None
    tokens: list[bytes] = []
    i = 2
    while len(tokens) < 3 and i < len(head):
        c = head[i : i + 1]
        if c == b"#":
            while i < len(head) and head[i : i + 1] not in b"\r\n":
                i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(head) and not head[j : j + 1].isspace() and head[j : j + 1] != b"#":
                j += 1
            tokens.append(head[i:j])
            i = j
    try:
        return int(tokens[2])
    except (IndexError, ValueError):
        return None


def _scale_wide(img: Image.Image, maxval: float | None) -> Image.Image:
    """Map a 16/32-bit or float single-band image to 8-bit by its real range."""
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr, dtype=np.float64)
    else:
        if maxval is None or maxval <= 0:
            maxval = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        scaled = arr.astype(np.float64) / float(maxval)
    out = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _to_mode(img: Image.Image, mode: str | None, maxval: int | None) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _scale_wide(img, maxval if img.mode != "F" else None)
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    elif img.mode in ("RGBa", "La"):
        img = img.convert("RGBA")
    elif img.mode in ("RGB", "L") and maxval is not None and maxval not in (255, 65535):
        pass  # Pillow already rescaled 8-bit PGM/PPM by maxval
    if img.mode in ("LA", "RGBA"):
        background = Image.new(img.mode, img.size, (255,) * len(img.mode))
        img = Image.alpha_composite(background, img).convert(img.mode[:-1])
    if mode is None:
        return img if img.mode in ("L", "RGB") else img.convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def _from_array(arr: np.ndarray, mode: str | None) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {tuple(arr.shape)} is not an image (want HxW, HxWx3 or HxWx4)")
    if arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype.kind == "f":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo >= 0.0 and hi <= 1.0:
            u8 = np.rint(arr * 255).astype(np.uint8)
        else:
            u8 = np.rint((arr - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        u8 = arr.astype(np.uint8) * 255
    elif arr.dtype.kind in "ui":
        top = 65535 if arr.max(initial=0) > 255 else 255
        u8 = np.clip(np.rint(arr.astype(np.float64) / top * 255), 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"array of dtype {arr.dtype} is not an image")
    img = Image.fromarray(np.ascontiguousarray(u8))
    return _to_mode(img, mode, None)


def load_image(source: ImageSource, mode: str | None = "RGB", *, name: str | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Read an image robustly; see the module docstring.

    ``mode``: ``"RGB"`` (default), ``"L"`` or ``None`` (keep grayscale as ``L``).
    ``name`` is used in error messages when ``source`` is not a path.
    ``max_pixels``: refuse larger images (default: the module's ``MAX_PIXELS``).

    >>> img = load_image(np.zeros((9, 9), dtype=np.uint8))
    >>> img.size, img.mode
    ((9, 9), 'RGB')
    """
    label = _describe(source, name)
    if max_pixels is None:  # read at call time, so setting images.MAX_PIXELS takes effect
        max_pixels = MAX_PIXELS
    if isinstance(source, Image.Image):
        return _to_mode(ImageOps.exif_transpose(source) or source, mode, None)
    if isinstance(source, np.ndarray):
        return _from_array(source, mode)
    if type(source).__module__.startswith("torch"):
        return _from_array(source.detach().cpu().numpy(), mode)

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if path.is_dir():
            raise ImageError(f"{label}: is a directory, not an image")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise ImageError(f"{label}: unsupported image source of type {type(source).__name__}")

    if len(data) == 0:
        raise ImageError(f"{label}: empty file (0 bytes)")
    fp = io.BytesIO(data)
    maxval = _pgm_maxval(fp)
    if maxval is not None and maxval > 255:
        # Pillow (>= 10) already rescales 16-bit PGM/PPM samples by the header's maxval to
        # 0..65535 (mode I), so the wide image's real range is 65535, not maxval.
        maxval = 65535
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{label}: {w}x{h} pixels is over the limit of {max_pixels:,} "
                    "(possible decompression bomb)")
            if getattr(img, "is_animated", False):
                img.seek(0)
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{label}: image is too large (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise ImageError(f"{label}: truncated or corrupt image ({msg})") from None
        raise ImageError(f"{label}: cannot decode image ({msg})") from None
    try:
        img = ImageOps.exif_transpose(img) or img
    except (OSError, ValueError, TypeError, KeyError, IndexError, SyntaxError, ZeroDivisionError,
            struct.error):  # a broken EXIF block must not lose the picture: it stays as stored
        pass
    return _to_mode(img, mode, maxval)


def list_images(paths: list[str | os.PathLike], recursive: bool = True,
                skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Expand files and directories into a sorted list of image paths.

    A directory is walked for files with image suffixes; a file is kept as given
    (so a non-image file still reaches :func:`load_image` and gets its clear error).
    A path that does not exist is an :class:`ImageError` here, before any model is loaded.

    ``skipped``: folders are forgiving, files are strict. With a list given, every image file
    found in a directory is decoded once here and those that cannot be read are left out and
    appended to it as ``(path, reason)``; files named explicitly are never skipped. When nothing
    readable is left, that is an :class:`ImageError` naming the first unreadable file.
    """
    out: list[Path] = []
    lost: list[tuple[Path, str]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(q for q in path.glob(pattern) if q.is_file() and is_image_path(q))
            if not found:
                raise ImageError(f"{path}: directory holds no image files")
            if skipped is not None:
                reasons = load_many(found, fn=unreadable)
                lost.extend((q, r) for q, r in zip(found, reasons) if r is not None)
                found = [q for q, r in zip(found, reasons) if r is None]
            out.extend(found)
        elif not path.exists():
            raise ImageError(f"{path}: no such file")
        else:
            out.append(path)
    if skipped is not None:
        skipped.extend(lost)
        if not out and lost:
            raise ImageError(f"{lost[0][0]}: {lost[0][1]} (none of the {len(lost)} image file(s) found "
                             "can be read)")
    return out


def unreadable(path: str | os.PathLike) -> str | None:
    """Why the image at ``path`` cannot be read (``"empty file (0 bytes)"``), or None when it can."""
    try:
        load_image(path, mode=None)
    except ImageError as exc:
        text, prefix = str(exc), f"{path}: "
        return text[len(prefix):] if text.startswith(prefix) else text
    return None


def load_many(items: Iterable[Any], fn: Callable[[Any], T] | None = None,
              workers: int | None = None) -> list[T]:
    """Decode many images in parallel threads (Pillow releases the GIL while decoding),
    in the order given; the first failure is raised, as a plain loop would.

    ``fn``: what to do with each item (default :func:`load_image`, RGB); ``workers``: threads
    (default: one per item, at most the CPU count and 8; ``1`` runs in this thread).

    >>> [im.size for im in load_many([np.zeros((4, 6), np.uint8), np.zeros((2, 2), np.uint8)])]
    [(6, 4), (2, 2)]
    """
    fn = load_image if fn is None else fn
    items = list(items)
    n = min(len(items), workers or min(os.cpu_count() or 1, 8))
    if n <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="convlens-load") as pool:
        return list(pool.map(fn, items))
