"""Applying kernels: an image (pixels or numbers) as a tensor, convolved and pooled stage by stage.

:func:`apply_kernel` plans every stage first (:func:`~convlens.lens.kernels.arithmetic.plan_stages`
checks the settings and the budget before anything is allocated), then runs them with
``torch.nn.functional``; :func:`apply_kernels` runs several kernels on one image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import SpecError
from ...images import ImageSource, load_image
from ...options import MAX_IMAGE_SIDE
from .arithmetic import Padding, Settings, StagePlan, check_settings, check_side, plan_stages
from .parse import MATRIX_SUFFIXES, KernelSpec, parse_kernel, read_matrix
from .result import KernelGallery, KernelResult, Stage

#: luminance weights for a 3-channel array of numbers seen in gray (ITU-R 601-2, as PIL's "L")
LUMA = (0.299, 0.587, 0.114)


def is_numbers(image: Any) -> bool:
    """Whether ``image`` is an array of numbers (convolved as it is) rather than pixels.

    Args:
        image: what :func:`apply_kernel` was given as the image.

    Returns:
        bool: True for a NumPy array or tensor of any dtype but ``uint8``; False for pixels (a
            file, a PIL image, a ``uint8`` array).
    """
    if isinstance(image, torch.Tensor):
        return image.dtype != torch.uint8
    return isinstance(image, np.ndarray) and image.dtype != np.uint8


def _numbers_tensor(image: "np.ndarray | torch.Tensor", color: str) -> torch.Tensor:
    """An array of numbers as ``(C, H, W)`` float32, values unchanged.

    NumPy: ``(H, W)`` or ``(H, W, C)``; a tensor: ``(H, W)`` or ``(C, H, W)``. Gray takes the
    luminance of three channels; rgb repeats one channel three times.
    """
    shape = tuple(image.shape)
    if len(shape) in (2, 3):
        check_side(shape[1:] if isinstance(image, torch.Tensor) and len(shape) == 3 else shape[:2])
    if isinstance(image, torch.Tensor):
        arr = image.detach().cpu().double().numpy()
        if arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
    else:
        arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
        raise SpecError(f"image: an array of numbers must be HxW or HxWx3 (a tensor HxW or 3xHxW), "
                        f"got shape {tuple(np.shape(image))}", param="image")
    if not np.isfinite(arr).all():
        raise SpecError("image: the array has NaN or infinite values", param="image")
    if arr.ndim == 3:
        arr = arr[..., :3]
        if color == "gray":
            arr = arr @ np.array(LUMA)
    elif color == "rgb":
        arr = np.repeat(arr[..., None], 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()



def _read_image_matrix(path: "str | Path") -> np.ndarray:
    try:
        return read_matrix(path)
    except SpecError as exc:
        raise SpecError(f"image {exc}", param="image") from None



def _to_tensor(image: ImageSource, color: str) -> torch.Tensor:
    if is_numbers(image):
        return _numbers_tensor(image, color)  # type: ignore[arg-type]
    pil = load_image(image, mode="L" if color == "gray" else "RGB", max_pixels=MAX_IMAGE_SIDE * MAX_IMAGE_SIDE)
    check_side((pil.height, pil.width))
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _conv(x: torch.Tensor, weight: torch.Tensor, plan: StagePlan, stride: int) -> torch.Tensor:
    """One depthwise convolution of ``x`` (C, H, W) with ``weight`` (C, 1, kh, kw)."""
    if any(plan.pads):
        x = F.pad(x, plan.pads)  # zeros, like Keras/TensorFlow 'same'
    return F.conv2d(x[None], weight, stride=stride, groups=x.shape[0])[0]


def _pool(x: torch.Tensor, plan: StagePlan, cfg: Settings) -> torch.Tensor:
    fn = F.max_pool2d if plan.op == "max" else F.avg_pool2d
    return fn(x[None], kernel_size=cfg.pool_size, stride=cfg.pool_stride)[0]


def apply_kernel(image: ImageSource, kernel: KernelSpec, *, color: str = "gray", stride: int = 1,
                 padding: Padding = "valid", repeat: int = 1, pool: str | None = None,
                 pool_size: int = 2, pool_stride: int | None = None) -> KernelResult:
    """Convolve ``image`` with ``kernel`` ``repeat`` times, then optionally pool once.

    Every stage keeps its tensor, its shape and the arithmetic that produced the shape, so the
    result shows what a CNN layer computes and why the map shrinks. Convolution is what CNN layers
    compute (cross-correlation: the kernel is not flipped).

    Args:
        image: anything :func:`convlens.images.load_image` reads (a file, a PIL image, a ``uint8``
            array), as pixels in [0, 1]; or numbers: an array of any other dtype (``(H, W)``,
            ``(H, W, 3)``; a tensor ``(C, H, W)``) or a ``.npy``/``.csv``/``.txt`` file, convolved
            exactly as it is, so a hand computation gives the same values.
        kernel: a name from :func:`~convlens.lens.kernels.kernel_names` or a matrix (see
            :func:`~convlens.lens.kernels.parse_kernel`).
        color: ``"gray"`` (one channel) or ``"rgb"`` (the kernel on each channel separately).
        stride: the step of the kernel, in pixels.
        padding: ``"valid"`` (none), ``"same"`` (TensorFlow's: output ``ceil(n / stride)``, the
            extra pad bottom/right for even kernels) or a number of zero pixels on every side.
        repeat: how many times the kernel is applied, each time to the previous output.
        pool: ``None``, ``"max"`` or ``"avg"``, applied once after the convolutions.
        pool_size: the pooling window's side.
        pool_stride: the pooling step (default: ``pool_size``).

    Returns:
        KernelResult: a view of the input, every stage's output and shape, and the arithmetic.

    Raises:
        SpecError: a malformed kernel or setting, an image or kernel too large for the lab, a
            kernel larger than the (padded) image, or values that overflow float32; the message
            names the argument.
        ImageError: an image file that cannot be read.

    Examples:
        >>> from convlens.lens.kernels import demo_image
        >>> r = apply_kernel(demo_image(), "1,0,-1;1,0,-1;1,0,-1", stride=2)
        >>> r.shapes, r.output.shape
        ([(9, 9), (4, 4)], torch.Size([1, 4, 4]))
    """
    name, matrix = parse_kernel(kernel)
    source = str(image) if isinstance(image, (str, Path)) else None
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in MATRIX_SUFFIXES:
        image = _read_image_matrix(image)  # numbers, convolved as they are
    cfg = check_settings(color=color, stride=stride, padding=padding, repeat=repeat, pool=pool,
                         pool_size=pool_size, pool_stride=pool_stride)
    x = _to_tensor(image, cfg.color)
    plans = plan_stages(tuple(x.shape[-2:]), matrix.shape, int(x.shape[0]), cfg=cfg)
    weight = torch.from_numpy(matrix.astype(np.float32))[None, None].repeat(x.shape[0], 1, 1, 1)
    stages: list[Stage] = []
    current = x
    with torch.no_grad():
        for plan in plans:
            if plan.kind == "conv":
                current = _conv(current, weight, plan, cfg.stride)
            else:
                current = _pool(current, plan, cfg)
            if not bool(torch.isfinite(current).all()):  # e.g. 1e30 entries convolved twice
                raise SpecError(f"kernel: {plan.label} overflows float32 (values beyond 3.4e38); "
                                "use smaller kernel entries or fewer repeats", param="kernel")
            stages.append(Stage(plan.label, current.contiguous(), plan.out_shape, plan.kind,
                                plan.arithmetic))
    return KernelResult(
        input=x, kernel_name=name, kernel=matrix, stages=stages, settings=cfg,
        source=source,
        values="numbers" if is_numbers(image) else "pixels")


def apply_kernels(image: ImageSource, kernels: Sequence[KernelSpec], **settings: Any) -> "KernelResult | KernelGallery":
    """Each of ``kernels`` on one image with the same settings, to compare kernels side by side.

    The image is read once for all kernels.

    Args:
        image: as :func:`apply_kernel` takes it.
        kernels: kernel names or matrices (one name or matrix is one kernel).
        **settings: :func:`apply_kernel`'s keyword arguments (``color``, ``stride``, ``padding``...).

    Returns:
        KernelResult | KernelGallery: the :class:`KernelResult` of a single kernel, or a
            :class:`KernelGallery` of several (one figure).

    Raises:
        SpecError: no kernel, or what :func:`apply_kernel` raises for any of them.
    """
    specs = [kernels] if isinstance(kernels, (str, Path, np.ndarray, torch.Tensor)) else list(kernels)
    if not specs:
        raise SpecError("kernel: give at least one kernel", param="kernel")
    if isinstance(image, (str, Path)) and Path(image).suffix.lower() in MATRIX_SUFFIXES:
        source, image = str(image), _read_image_matrix(image)  # read once for all kernels
    else:
        source = str(image) if isinstance(image, (str, Path)) else None
    results = [apply_kernel(image, k, **settings) for k in specs]
    for r in results:
        r.source = source
    return results[0] if len(results) == 1 else KernelGallery(results)
