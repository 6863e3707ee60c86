"""Shape arithmetic and stage planning: what each convolution and pooling does to a shape.

One axis at a time (:func:`conv_output_size`, :func:`pool_output_size`, :func:`same_padding`),
then the whole pipeline (:func:`plan_stages`): every stage's shape and the arithmetic behind it,
validated and held to the lab's budget (:func:`check_budget`) before anything is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from ...errors import SpecError
from ...options import MAX_IMAGE_SIDE, MAX_LAB_MACS, MAX_LAB_VALUES, KernelOptions, check_options

Padding = Union[str, int]


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise SpecError(f"{name} must be a positive integer, got {value!r}", param=name)
    return int(value)


def _check_padding(padding: Padding) -> Padding:
    if isinstance(padding, str):
        p = padding.strip().lower()
        if p in ("valid", "same"):
            return p
        if p.isdigit():
            return int(p)
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        return int(padding)
    raise SpecError(f"padding must be valid, same or a non-negative integer, got {padding!r}", param="padding")


def same_padding(n: int, k: int, stride: int = 1) -> tuple[int, int]:
    """``(before, after)`` zero padding for TensorFlow-style ``same``: the output has
    ``ceil(n / stride)`` pixels and any odd extra pixel goes after (bottom/right).

    Args:
        n: the input's length along the axis.
        k: the kernel's length along the axis.
        stride: the kernel's step.

    Returns:
        tuple[int, int]: the zeros added before (top/left) and after (bottom/right).

    Examples:
        >>> same_padding(9, 3), same_padding(9, 2), same_padding(9, 4)
        ((1, 1), (0, 1), (1, 2))
    """
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def conv_output_size(n: int, k: int, stride: int = 1, padding: Padding = "valid") -> int:
    """Output length of a convolution along one axis.

    ``valid``: ``floor((n - k) / stride) + 1``; an integer ``p``:
    ``floor((n + 2p - k) / stride) + 1``; ``same``: ``ceil(n / stride)``.

    Args:
        n: the input's length along the axis.
        k: the kernel's length along the axis.
        stride: the kernel's step.
        padding: ``"valid"``, ``"same"`` or the zeros added on each side.

    Returns:
        int: the output's length.

    Raises:
        SpecError: a length, kernel or stride that is not a positive integer, a bad padding, or a
            kernel longer than the padded input.

    Examples:
        >>> conv_output_size(9, 3), conv_output_size(9, 3, 2), conv_output_size(9, 4, padding="same")
        (7, 4, 9)
        >>> conv_output_size(224, 7, stride=2, padding=3)
        112
    """
    n, k = _check_positive(n, "n"), _check_positive(k, "k")
    stride, padding = _check_positive(stride, "stride"), _check_padding(padding)
    if padding == "same":
        return -(-n // stride)
    pad = 0 if padding == "valid" else padding
    if k > n + 2 * pad:
        raise SpecError(f"k={k} is larger than the padded length {n + 2 * pad}", param="k")
    return (n + 2 * pad - k) // stride + 1


def pool_output_size(n: int, size: int, stride: int | None = None) -> int:
    """Output length of max/average pooling along one axis (no padding, floor):
    ``floor((n - size) / stride) + 1`` with ``stride`` defaulting to ``size``.

    Args:
        n: the input's length along the axis.
        size: the pooling window's length.
        stride: the window's step (default: ``size``).

    Returns:
        int: the output's length.

    Raises:
        SpecError: a length, size or stride that is not a positive integer, or a window longer
            than the input.

    Examples:
        >>> pool_output_size(7, 2), pool_output_size(8, 2), pool_output_size(7, 3, 1)
        (3, 4, 5)
    """
    n, size = _check_positive(n, "n"), _check_positive(size, "size")
    stride = size if stride is None else _check_positive(stride, "stride")
    if size > n:
        raise SpecError(f"size {size} is larger than the length n={n} it would pool", param="size")
    return (n - size) // stride + 1


def _fmt(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}"


@dataclass(frozen=True)
class Settings:
    """Validated, normalised pipeline settings (see :func:`check_settings`)."""

    color: str = "gray"
    stride: int = 1
    padding: Padding = "valid"
    repeat: int = 1
    pool: str | None = None
    pool_size: int = 2
    pool_stride: int = 2


def check_settings(*, color: str = "gray", stride: int = 1, padding: Padding = "valid",
                   repeat: int = 1, pool: str | None = None, pool_size: int = 2,
                   pool_stride: int | None = None) -> Settings:
    """Validate every scalar argument; a bad one raises :class:`SpecError` naming it.

    Args:
        color: ``"gray"`` or ``"rgb"``.
        stride: the kernel's step, in pixels.
        padding: ``"valid"``, ``"same"`` or a number of zero pixels on every side.
        repeat: how many times the kernel is applied.
        pool: ``None``, ``"max"`` or ``"avg"`` (``"average"`` is read as ``"avg"``).
        pool_size: the pooling window's side.
        pool_stride: the pooling step (default: ``pool_size``).

    Returns:
        Settings: the settings, normalised (lower case, integers, the pooling stride filled in).

    Raises:
        SpecError: a setting out of the bounds of :class:`convlens.options.KernelOptions`, naming it.

    Examples:
        >>> check_settings(padding="SAME", pool="average").pool
        'avg'
    """
    o = check_options(KernelOptions, color=color, stride=stride, padding=padding, repeat=repeat, pool=pool,
                      pool_size=pool_size, pool_stride=pool_stride)
    return Settings(color=o.color, stride=o.stride, padding=o.padding, repeat=o.repeat, pool=o.pool,
                    pool_size=o.pool_size, pool_stride=o.pool_size if o.pool_stride is None else o.pool_stride)


@dataclass(frozen=True)
class StagePlan:
    """One step of the pipeline before it runs: what it does, its shapes and arithmetic."""

    label: str
    op: str  # "conv", "max" or "avg"
    in_shape: tuple[int, int]
    out_shape: tuple[int, int]
    arithmetic: str
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom

    @property
    def kind(self) -> str:
        """``"conv"`` or ``"pool"``."""
        return "conv" if self.op == "conv" else "pool"


def _padding_words(padding: Padding) -> str:
    return padding if isinstance(padding, str) else f"pad {padding}"


def _conv_step(shape: tuple[int, int], kshape: tuple[int, int], cfg: Settings,
               step: int) -> StagePlan:
    if cfg.padding == "same":
        top, bottom = same_padding(shape[0], kshape[0], cfg.stride)
        left, right = same_padding(shape[1], kshape[1], cfg.stride)
    else:
        top = bottom = left = right = 0 if cfg.padding == "valid" else int(cfg.padding)
    padded = (shape[0] + top + bottom, shape[1] + left + right)
    if kshape[0] > padded[0] or kshape[1] > padded[1]:
        what = f"a {_fmt(kshape)} kernel to a {_fmt(shape)} image ({_padding_words(cfg.padding)} padding)"
        if step > 1:
            raise SpecError(f"repeat {cfg.repeat}: step {step} would apply {what}; "
                            f"at most {step - 1} repeats fit", param="repeat")
        raise SpecError(f"kernel {_fmt(kshape)} does not fit a {_fmt(shape)} image "
                        f"({_padding_words(cfg.padding)} padding): it is larger than the image "
                        "(use same padding or a smaller one)", param="kernel")
    out = (conv_output_size(padded[0], kshape[0], cfg.stride),
           conv_output_size(padded[1], kshape[1], cfg.stride))
    arith = (f"{_fmt(shape)} * {_fmt(kshape)} ({_padding_words(cfg.padding)}, "
             f"stride {cfg.stride}) -> {_fmt(out)}")
    return StagePlan(f"conv {step}", "conv", shape, out, arith, (left, right, top, bottom))


def _pool_step(shape: tuple[int, int], cfg: Settings) -> StagePlan:
    size, stride = cfg.pool_size, cfg.pool_stride
    if size > shape[0] or size > shape[1]:
        raise SpecError(f"pool_size {size} is larger than the {_fmt(shape)} output it would pool",
                        param="pool_size")
    out = (pool_output_size(shape[0], size, stride), pool_output_size(shape[1], size, stride))
    label = f"{cfg.pool} pool {size}x{size}" + (f" stride {stride}" if stride != size else "")
    arith = f"{_fmt(shape)} {cfg.pool} pool {size}x{size} (stride {stride}) -> {_fmt(out)}"
    return StagePlan(label, cfg.pool, shape, out, arith)


def plan_stages(input_shape: tuple[int, int], kernel_shape: tuple[int, int], channels: int = 1,
                **settings: Any) -> list[StagePlan]:
    """Work out each stage's shape (and validate everything) without computing anything.

    Args:
        input_shape: the image's ``(h, w)``.
        kernel_shape: the kernel's ``(h, w)``.
        channels: 1 (gray) or 3 (rgb); counts in the budget :func:`check_budget` holds the plan to.
        **settings: :func:`~convlens.lens.kernels.apply_kernel`'s keyword arguments, or
            ``cfg=Settings(...)`` already checked.

    Returns:
        list[StagePlan]: one plan per convolution, then one for the pooling if asked.

    Raises:
        SpecError: a bad setting, an image too large, a kernel or pooling window that does not fit,
            or a pipeline over the lab's budget; the message names the argument.

    Examples:
        >>> [p.out_shape for p in plan_stages((9, 9), (3, 3), repeat=3)]
        [(7, 7), (5, 5), (3, 3)]
        >>> plan_stages((7, 7), (3, 3), padding="same", pool="max")[-1].arithmetic
        '7x7 max pool 2x2 (stride 2) -> 3x3'
    """
    cfg = settings.pop("cfg", None) or check_settings(**settings)
    shape = (int(input_shape[0]), int(input_shape[1]))
    kshape = (int(kernel_shape[0]), int(kernel_shape[1]))
    check_side(shape)
    plans: list[StagePlan] = []
    for step in range(1, cfg.repeat + 1):
        plans.append(_conv_step(shape, kshape, cfg, step))
        shape = plans[-1].out_shape
    if cfg.pool is not None:
        plans.append(_pool_step(shape, cfg))
    check_budget(plans, kshape, channels)
    return plans


def check_budget(plans: Sequence[StagePlan], kernel_shape: tuple[int, int], channels: int = 1) -> None:
    """Refuse, before anything is computed, a pipeline whose stages would hold more than
    :data:`~convlens.options.MAX_LAB_VALUES` float32 values or whose convolutions would take more than
    :data:`~convlens.options.MAX_LAB_MACS` multiply-adds (a large padding, many repeats of a large image).

    Args:
        plans: the stages, as :func:`plan_stages` works them out.
        kernel_shape: the kernel's ``(h, w)``.
        channels: the channels every stage holds (1 gray, 3 rgb).

    Raises:
        SpecError: over budget, naming ``repeat``, ``padding`` or ``image`` (what to reduce).
    """
    values = macs = 0
    for p in plans:
        (h, w), (oh, ow) = p.in_shape, p.out_shape
        if p.kind == "conv":
            left, right, top, bottom = p.pads
            values += (h + top + bottom) * (w + left + right)  # the padded copy
            macs += oh * ow * kernel_shape[0] * kernel_shape[1]
        values += oh * ow
    values, macs = values * channels, macs * channels
    if values > MAX_LAB_VALUES or macs > MAX_LAB_MACS:
        what = (f"{values * 4 / 2**20:.0f} MiB of stages" if values > MAX_LAB_VALUES
                else f"{macs / 1e9:.1f} billion multiply-adds")
        convs = [p for p in plans if p.kind == "conv"]
        param = "repeat" if len(convs) > 1 else "padding" if any(convs[0].pads) else "image"
        raise SpecError(f"{param}: this pipeline would need {what} (at most {MAX_LAB_VALUES * 4 >> 20} MiB and "
                        f"{MAX_LAB_MACS / 1e9:.1f} billion); use fewer repeats, less padding or a smaller image",
                        param=param)


def check_side(shape: Sequence[int], what: str = "image") -> None:
    """Refuse an image (h, w) with a side over :data:`~convlens.options.MAX_IMAGE_SIDE` pixels.

    Args:
        shape: the image's ``(h, w)``.
        what: how the message names the image.

    Raises:
        SpecError: a side too long (``param="image"``).
    """
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) > MAX_IMAGE_SIDE:
        raise SpecError(f"{what}: {w}x{h} is too large for the kernels lab (at most {MAX_IMAGE_SIDE} pixels a side; "
                        "resize it first)", param="image")


