"""Layouts: how a layer's output reads as a spatial grid ``(N, C, H, W)``, or why it does not.

A layer may emit channels-first maps (convolutions), channels-last maps ``(N, H, W, C)`` (Swin
stages, ConvNeXt's LayerNorm and MLP, torchvision's permuted blocks) or tokens ``(N, T, C)``
(ViT-style: class, register and distillation tokens first, then the patches row by row).
:func:`classify` reads one output from the module's type, the grid's aspect against the input's,
and what :func:`token_info` finds in the model (timm's ``num_prefix_tokens`` and
``patch_embed.patch_size``, torchvision's ``class_token`` and ``conv_proj``, or a hand-built
ViT's ``cls_token`` parameters and patchifying convolution). Where the reading is not certain it
refuses with a reason: a map is never computed on the wrong axes. The :class:`~convlens.probe.Probe`
applies it to every output it records.

>>> import torch
>>> from torch import nn
>>> info = TokenInfo(prefix=1, patch=(16, 16), channels_last_norms=frozenset({384}))
>>> classify(nn.LayerNorm(384), torch.zeros(2, 197, 384), 2, (224, 224), info)
Layout(kind='tokens', prefix=1, grid=(14, 14))
>>> classify(nn.Identity(), torch.zeros(2, 6, 197, 64), 2, (224, 224), info)[:12]
'its output ('
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Layout", "NCHW", "TokenInfo", "classify", "token_info"]


#: module types whose 4-D output is channels-first by construction (convolutions, 2-D norms, pools)
_NCHW_TYPES = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
               nn.modules.instancenorm._InstanceNorm, nn.modules.pooling._MaxPoolNd,
               nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
               nn.modules.pooling._AdaptiveMaxPoolNd)
#: parameter names that hold prefix tokens (class, distillation, register) in ViT-style models
_PREFIX_PARAMS = ("cls_token", "class_token", "dist_token", "reg_token", "register_tokens")


@dataclass(frozen=True)
class Layout:
    """How a layer's output maps to a spatial grid ``(N, C, H, W)``.

    ``kind``: ``"nchw"`` (as it is), ``"nhwc"`` (channels-last: Swin stages, ConvNeXt's
    LayerNorm/MLP, torchvision's permuted blocks) or ``"tokens"`` (``(N, T, C)``: ``prefix``
    class/register/distillation tokens first, then ``grid`` rows x columns of patches).
    :meth:`to_grid` gives the view the maps are computed on, :meth:`from_grid` the inverse (what
    the model continues with when a probe replaces or differentiates the grid).
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def to_grid(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            h, w = self.grid
            return t[:, self.prefix:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
        return t

    def from_grid(self, g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``g`` ``(N, C, H, W)`` back in the layer's own layout; prefix tokens taken from ``like``."""
        if self.kind == "nhwc":
            return g.permute(0, 2, 3, 1)
        if self.kind == "tokens":
            tokens = g.flatten(2).transpose(1, 2)
            return torch.cat([like[:, :self.prefix].to(g.dtype), tokens], dim=1) if self.prefix else tokens
        return g

    def describe(self) -> str:
        if self.kind == "tokens":
            extra = f" after {self.prefix} prefix token{'s' * (self.prefix != 1)}" if self.prefix else ""
            return f"tokens on a {self.grid[0]}x{self.grid[1]} patch grid{extra}"
        return "channels-last (N, H, W, C)" if self.kind == "nhwc" else "channels-first (N, C, H, W)"


NCHW = Layout("nchw")


@dataclass(frozen=True)
class TokenInfo:
    """What a model says about its tokens: how many prefix tokens lead the sequence (None: not
    known) and the patch size of its patch embedding (None: no patch embedding found)."""

    prefix: int | None
    patch: tuple[int, int] | None
    channels_last_norms: frozenset[int]  # sizes of nn.LayerNorms: channels a 4-D output may end with


def token_info(model: nn.Module) -> TokenInfo:
    """Read a model's token layout from its attributes: timm's ``num_prefix_tokens`` and
    ``patch_embed.patch_size``, torchvision's ``class_token`` and ``conv_proj``, or, for a module a
    user built, its ``cls_token``/``dist_token``/``reg_token`` parameters and its patchifying
    convolution (kernel = stride > 1)."""
    prefix = getattr(model, "num_prefix_tokens", None)
    if not isinstance(prefix, int):
        counts = [p.shape[-2] for n, p in model.named_parameters()
                  if n.split(".")[-1] in _PREFIX_PARAMS and p.dim() == 3 and "." not in n]
        prefix = sum(counts) if counts else None
    patch = None
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "patch_size", None)
    if size is not None:
        patch = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)[:2]
    elif isinstance(getattr(model, "conv_proj", None), nn.Conv2d):  # torchvision ViT
        patch = tuple(model.conv_proj.stride)
    else:
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == tuple(m.stride) and m.stride[0] > 1:
                patch = tuple(m.stride)
                break
    norms = frozenset(int(m.normalized_shape[-1]) for m in model.modules()
                      if isinstance(m, nn.LayerNorm) and "2d" not in type(m).__name__.lower())
    return TokenInfo(prefix, patch, norms)


def _off(h: int, w: int, size: tuple[int, int]) -> float:
    """How far ``h x w`` is from the aspect of an ``H x W`` input, in grid cells (inf when larger)."""
    H, W = size
    if not (1 <= h <= H and 1 <= w <= W):
        return float("inf")
    return abs(h * W - w * H) / max(H, W)


def _patch_grids(size: tuple[int, int], patch: tuple[int, int]) -> set[tuple[int, int]]:
    """The patch grid of an ``H x W`` input and the grids merged 2x per stage from it."""
    gh, gw = size[0] // patch[0], size[1] // patch[1]
    return {(-(-gh // 2 ** k), -(-gw // 2 ** k)) for k in range(6)}


def classify(module: nn.Module, out: torch.Tensor, batch: int, size: tuple[int, int],
             info: TokenInfo) -> Layout | str:
    """The :class:`Layout` of ``module``'s output ``out`` for a batch of ``batch`` images of
    ``size`` (H, W), or a short reason why it is not a grid (a refusal, never a guess)."""
    shape = tuple(out.shape)
    if not shape or shape[0] != batch:
        return f"its output {shape} does not keep the batch of {batch} first (patches folded into it)"
    if len(shape) == 4:
        _, a, b, c = shape
        off_first, off_last = _off(b, c, size), _off(a, b, size)
        first, last = off_first < 1, off_last < 1  # the input's aspect, within a cell
        name = type(module).__name__
        if isinstance(module, _NCHW_TYPES) or name.endswith("2d"):
            # channels-first by construction; an odd kernel may skew the grid by a cell or two, but
            # not more (MobileViT runs its convolutions and norms on unfolded patches x pixels)
            return NCHW if off_first <= 2 else f"its output {shape[1:]} is not a spatial grid of the input"
        if isinstance(module, (nn.LayerNorm, nn.Linear)):
            return Layout("nhwc") if last else f"its output {shape[1:]} is not height x width x channels"
        if info.patch is not None and info.channels_last_norms:
            # a module of a transformer that could be anything (Swin's attention softmax over a 7x7
            # window is (heads, 49, 49)): only the patch grid or a grid merged from it is a grid
            grids = _patch_grids(size, info.patch)
            first, last = first and (b, c) in grids, last and (a, b) in grids
        if first and last:  # a cube (C = H = W): channels-first unless the model normalises C-sized last axes
            if c in info.channels_last_norms:
                return f"its output {shape[1:]} could be channels-first or channels-last"
            return NCHW
        if first or last:
            return NCHW if first else Layout("nhwc")
        if not info.channels_last_norms and off_first <= 2:  # a CNN (no last-axis norms): channels-first
            return NCHW
        return f"its output {shape[1:]} is neither channels x height x width nor height x width x channels"
    if len(shape) == 3:
        if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)):
            return f"its output {shape[1:]} is one-dimensional"
        if info.patch is None:
            return f"its output {shape[1:]} has no spatial grid (no patch embedding found in the model)"
        T = shape[1]
        gh, gw = size[0] // info.patch[0], size[1] // info.patch[1]
        for h, w in sorted(_patch_grids(size, info.patch), reverse=True):  # the patch grid, or merged 2x per stage
            for p in {info.prefix or 0, 0}:
                if T == p + h * w:
                    return Layout("tokens", p, (h, w))
        return f"its {T} tokens do not fit the {gh}x{gw} patch grid"
    return f"its output {shape[1:]} has no spatial grid"
