"""Channels-last (NHWC) weights: the same model, faster convolutions.

oneDNN runs 2-D convolutions on channels-last tensors faster than on the default
NCHW layout. Measured on the 2-core CPU box (bench/RESULTS.md): a ResNet-50 forward
of 16 images 0.98 s -> 0.74 s, EfficientNet-Lite0 of 32 images 0.43 s -> 0.34 s,
activation maximisation 1.6x. Values are unchanged; only the strides of the 4-D
weights change, so results agree with the NCHW model to float rounding.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def _spatial_weights(module: nn.Module) -> list[torch.Tensor]:
    """The 4-D parameters with a kernel larger than 1x1 (1x1 kernels look the same in both layouts)."""
    return [p for p in module.parameters() if p.dim() == 4 and p.shape[2] * p.shape[3] > 1]


def is_channels_last(module: nn.Module) -> bool:
    """True if every spatial 4-D weight of ``module`` is stored channels-last."""
    ws = _spatial_weights(module)
    return bool(ws) and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                            for p in ws)


def to_channels_last(module: nn.Module) -> bool:
    """Store ``module``'s 4-D weights channels-last, in place; False if it has no convolutions."""
    if not _spatial_weights(module):
        return False
    if not is_channels_last(module):
        module.to(memory_format=torch.channels_last)
    return True


@contextlib.contextmanager
def channels_last(module: nn.Module) -> Iterator[None]:
    """Run ``module`` channels-last inside the block, restoring its layout after (also on errors).

    A no-op for a module that is already channels-last (every LensModel by default)
    or has no convolutions.
    """
    if not _spatial_weights(module) or is_channels_last(module):
        yield
        return
    module.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        module.to(memory_format=torch.contiguous_format)


__all__ = ["channels_last", "is_channels_last", "to_channels_last"]
