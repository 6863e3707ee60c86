"""The built-in EfficientNet-Lite0 in plain torch: timm's ``tf_efficientnet_lite0``, module for module.

Why not ``timm.create_model``: importing timm imports torchvision, which imports ``torch._dynamo``;
together about 2 s of CPU before the first image, more than torch itself. ``convlens predict`` of
the built-in model needs none of it. This module rebuilds the same network with the same module
names, classes names, state-dict keys and arithmetic (TensorFlow 'SAME' padding on the strided
convolutions, batch norm with eps 1e-3 followed by ReLU6), so layer names (``blocks.6``,
``conv_head``), hooks, folding and weights files are the same; ``tests/test_learner.py`` holds
it to timm's model output for output. It offers the parts of timm's model API that convlens uses
for transfer learning (``forward_features``, ``forward_head``, ``get_classifier``,
``reset_classifier``, ``pretrained_cfg``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: timm's preprocessing config of tf_efficientnet_lite0 (Inception-style mean/std 0.5)
PRETRAINED_CFG: dict[str, Any] = {
    "architecture": "tf_efficientnet_lite0", "input_size": (3, 224, 224), "fixed_input_size": False,
    "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center", "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5), "num_classes": 1000, "pool_size": (7, 7), "first_conv": "conv_stem",
    "classifier": "classifier",
}

#: (block kind, repeats, kernel, first stride, expansion, output channels) per stage
STAGES = [("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
          ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320)]
BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's 'SAME' padding, computed from the input's size (timm's class
    of this name: uneven padding goes to the bottom and the right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class BatchNormAct2d(nn.BatchNorm2d):
    """Batch norm, then ``drop`` (identity), then ``act`` (ReLU6 or identity), as timm's class."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=BN_EPS)
        self.drop = nn.Identity()
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """timm's 'same' padding: symmetric (static) at stride 1, computed per input when strided."""
    if stride == 1:
        return nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, k, stride, 0, groups=groups, bias=False)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k, then pointwise 1 x 1 (no expansion, no skip in Lite0's first stage)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.drop_path(y) + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """Expand 1 x 1, depthwise k x k, project 1 x 1 (linear), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(self.aa(y))))
        return self.drop_path(y) + x if self.has_skip else y


class SelectAdaptivePool2d(nn.Module):
    """Global average pooling, flattened (timm's class with ``pool_type='avg'``)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(x))


class EfficientNet(nn.Module):
    """EfficientNet-Lite0 with timm's module names: ``conv_stem``, ``bn1``, ``blocks.0-6``,
    ``conv_head``, ``bn2``, ``global_pool``, ``classifier``."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.pretrained_cfg = dict(PRETRAINED_CFG)
        self.default_cfg = self.pretrained_cfg
        self.drop_rate = 0.0
        self.num_features = 1280
        self.conv_stem = _conv(3, 32, 3, 2)
        self.bn1 = BatchNormAct2d(32)
        stages, cin = [], 32
        for kind, repeats, k, stride, expand, cout in STAGES:
            blocks = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(DepthwiseSeparableConv(cin, cout, k, s) if kind == "ds"
                              else InvertedResidual(cin, cout, k, s, expand))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, self.num_features, 1)
        self.bn2 = BatchNormAct2d(self.num_features)
        self.global_pool = SelectAdaptivePool2d()
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """A new (randomly initialised) classifier for ``num_classes`` classes; 0 drops it."""
        if global_pool != "avg":
            raise ValueError(f"global_pool {global_pool!r}: only 'avg' is built in")
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNet:
    """The network with torch's default initialisation (load weights into it)."""
    return EfficientNet(num_classes)
