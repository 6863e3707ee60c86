"""Preprocessing carried by a model (the timm idea: models know their inputs).

A :class:`Preprocess` holds what turns a picture into the model's input tensor:
input size, mean/std, interpolation, crop fraction.  The transform itself is
timm's ``create_transform`` (resize, centre crop, to-tensor, normalise), so it
is exactly what the model was trained with.  :meth:`Preprocess.crop_box` gives
the inverse geometry: where the model's input grid lies on the original image
(used to map heatmaps back).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import ModelError, SpecError
from ..options import PreprocessConfig, check_file

_CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Input geometry and normalisation of a model.

    >>> p = Preprocess(input_size=(3, 224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> p.channels, p.height, p.width
    (3, 224, 224)
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    _transform: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        size = self.input_size
        if isinstance(size, (str, bytes)) or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                     for v in size):
            raise SpecError(f"preprocess: input_size must be whole numbers (C, H, W), got {self.input_size!r}",
                            param="preprocess")
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        if len(self.input_size) != 3:
            raise SpecError(f"preprocess: input_size must be (C, H, W), got {self.input_size!r}", param="preprocess")
        c = self.input_size[0]
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) == 1 and c > 1:
            mean, std = mean * c, std * c
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        self.check()

    def check(self, where: str | None = None) -> None:
        """Refuse what would give wrong pictures or huge work, before any is done: the bounds and
        rules of :class:`convlens.options.PreprocessConfig` (input sides up to
        :data:`~convlens.options.MAX_IMAGE_SIDE`, finite means, stds > 0, crop_pct in (0, 1]).
        SpecError naming ``preprocess`` (or ModelError naming the file ``where``)."""
        d = self.to_dict()
        if where is not None:
            check_file(where, d, PreprocessConfig, ModelError)
            return
        try:
            check_file("preprocess", d, PreprocessConfig, SpecError)
        except SpecError as exc:
            raise SpecError(str(exc), param="preprocess") from None

    # -- shape -------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def height(self) -> int:
        return self.input_size[1]

    @property
    def width(self) -> int:
        return self.input_size[2]

    @property
    def image_mode(self) -> str:
        """The PIL mode images are converted to before the transform."""
        return "L" if self.channels == 1 else "RGB"

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_transform", None)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        keys = {"input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode"}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys})

    @classmethod
    def from_timm(cls, module: torch.nn.Module, **overrides: Any) -> "Preprocess":
        """Resolve timm's data config for ``module`` (its pretrained_cfg, if any). A config that
        names every field is read as it is (what timm would resolve), without importing timm."""
        cfg = dict(getattr(module, "pretrained_cfg", None) or {})
        if not all(cfg.get(k) is not None for k in _CFG_KEYS):
            from timm.data import resolve_data_config

            cfg = resolve_data_config({}, model=module)
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        return cls(
            input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"],
            interpolation=cfg.get("interpolation", "bicubic"),
            crop_pct=float(cfg.get("crop_pct") or 1.0), crop_mode=cfg.get("crop_mode", "center"),
        )

    # -- the transform --------------------------------------------------------
    @property
    def transform(self):
        """timm's eval transform for PIL images (cached); :class:`PilTransform` where it does the
        same steps bit for bit (a square input, centre crop), so that timm is not imported."""
        if self._transform is None and PilTransform.covers(self):
            object.__setattr__(self, "_transform", PilTransform(self))
        if self._transform is None:
            from timm.data import create_transform

            t = create_transform(
                input_size=self.input_size, is_training=False, interpolation=self.interpolation,
                mean=self.mean, std=self.std, crop_pct=self.crop_pct, crop_mode=self.crop_mode,
            )
            object.__setattr__(self, "_transform", t)
        return self._transform

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch of [0, 1] tensors (N, C, H, W)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`normalize`: back to [0, 1] pixels (clamped)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    # -- geometry -------------------------------------------------------------
    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) of the image after the resize step, as torchvision computes it."""
        crop = self.crop_pct or 1.0
        sh, sw = math.floor(self.height / crop), math.floor(self.width / crop)
        if self.crop_mode == "squash":  # timm: Resize((sh, sw)), aspect not kept
            return sw, sh
        if sh == sw and self.crop_mode != "border":  # torchvision Resize(int): the shorter side becomes sh
            if width <= height:
                return sh, int(sh * height / width)
            return int(sh * width / height), sh
        # timm's ResizeKeepRatio: the image fits (center: shortest edge; border: longest edge) the scale size
        ratio_h, ratio_w = height / sh, width / sw
        ratio = max(ratio_h, ratio_w) if self.crop_mode == "border" else min(ratio_h, ratio_w)
        return round(width / ratio), round(height / ratio)

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Where the model's input grid lies on an original image of ``width`` x ``height``.

        Returns ``(x0, y0, x1, y1)`` in original pixel coordinates: the model's input
        pixel (0, 0) starts at (x0, y0) and pixel (W, H) ends at (x1, y1).
        """
        rw, rh = self.resized_size(width, height)
        th, tw = self.height, self.width
        left = int(round((rw - tw) / 2.0))
        top = int(round((rh - th) / 2.0))
        sx, sy = width / rw, height / rh
        return (left * sx, top * sy, (left + tw) * sx, (top + th) * sy)

    def crop_mask(self, width: int, height: int) -> torch.Tensor:
        """``(height, width)`` float mask of an original image: 1 where the model's input grid
        lies (:meth:`crop_box`, rounded to pixels), 0 where the crop cut the picture off."""
        x0, y0, x1, y1 = (max(0, round(v)) for v in self.crop_box(width, height))
        mask = torch.zeros(height, width)
        mask[y0:y1, x0:x1] = 1.0
        return mask


class PilTransform:
    """timm's eval transform for a square input with a centre crop, in Pillow and torch only:
    torchvision's ``Resize(shorter side)``, ``CenterCrop``, ``ToTensor``, ``Normalize``, the same
    tensor bit for bit (``tests/test_learner.py``). timm's own builds on torchvision, whose import
    costs more CPU than torch's; a picture that needs padding (smaller than the crop) goes to it."""

    RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}

    def __init__(self, pre: Preprocess):
        self.pre = pre
        self.size = math.floor(pre.height / (pre.crop_pct or 1.0))
        self.resample = self.RESAMPLE[pre.interpolation]
        self._fallback: Any = None

    @classmethod
    def covers(cls, pre: Preprocess) -> bool:
        return (pre.height == pre.width and pre.crop_mode == "center" and pre.interpolation in cls.RESAMPLE
                and pre.channels in (1, 3) and len(pre.mean) == pre.channels)

    def __call__(self, pic: Any) -> torch.Tensor:
        import numpy as np

        w, h = pic.size
        nw, nh = (self.size, int(self.size * h / w)) if w <= h else (int(self.size * w / h), self.size)
        c = self.pre.height
        if c > nh or c > nw or pic.mode not in ("RGB", "L"):
            return self.fallback(pic)
        if (nw, nh) != (w, h):
            pic = pic.resize((nw, nh), self.resample)
        top, left = int(round((nh - c) / 2.0)), int(round((nw - c) / 2.0))
        if (top, left, c, c) != (0, 0, nh, nw):
            pic = pic.crop((left, top, left + c, top + c))
        x = torch.from_numpy(np.array(pic, np.uint8, copy=True)).view(c, c, len(pic.getbands()))
        x = x.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor(self.pre.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.pre.std, dtype=x.dtype).view(-1, 1, 1)
        return x.sub_(mean).div_(std)

    def fallback(self, pic: Any) -> torch.Tensor:
        if self._fallback is None:
            from timm.data import create_transform

            p = self.pre
            self._fallback = create_transform(input_size=p.input_size, is_training=False, interpolation=p.interpolation,
                                              mean=p.mean, std=p.std, crop_pct=p.crop_pct, crop_mode=p.crop_mode)
        return self._fallback(pic)
