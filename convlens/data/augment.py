"""Augmentation specs: ``"rotate=15,translate=0.1,zoom=0.1,flip=h"``.

An :class:`Augment` is parsed from the spec string and applied to whole batches on
the fly (training split only): one random affine per image (rotation, translation,
zoom, shear; the same parameters as torchvision's ``v2.RandomAffine``) done for the
batch with a single ``grid_sample``, random flips, brightness and contrast.  Measured
by ``bench/train_bench.py`` on a 2-core CPU, a batch of 437 64x60 faces takes about
0.1 s this way and about 3x longer with torchvision's ``v2.RandomAffine`` applied per
sample (the geometry is the same: a test checks it against ``v2.functional.affine``);
:meth:`Augment.to_torchvision` gives the equivalent per-sample ``v2.Compose`` for use
in your own DataLoader.

``rotate`` is in degrees; Keras' ``RandomRotation(0.2)`` is a fraction of a full turn, written
``rotate=0.2turn`` here (72 degrees). A rotation below one degree draws a warning: it is almost
always a fraction meant as degrees.

>>> aug = parse_augment("rotate=15,translate=0.1,zoom=0.1,flip=h")
>>> aug
Augment(rotate=15.0, translate=0.1, zoom=0.1, flip='h')
>>> import torch
>>> aug(torch.zeros(4, 1, 60, 64, dtype=torch.uint8)).shape
torch.Size([4, 1, 60, 64])
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpecError, closest
from ..images import load_image
from ..render.grid import grid as tile

_ALLOWED = {
    "rotate": "degrees, e.g. rotate=15, or a fraction of a turn as Keras' RandomRotation, e.g. rotate=0.2turn",
    "translate": "fraction of the size, e.g. translate=0.1",
    "zoom": "fraction, e.g. zoom=0.1 (scale 0.9..1.1)",
    "shear": "degrees, e.g. shear=10",
    "flip": "h, v or hv",
    "brightness": "fraction, e.g. brightness=0.2",
    "contrast": "fraction, e.g. contrast=0.2",
    "fill": "reflect, border or zeros (how corners are filled)",
}
_LIMITS = {"rotate": (0, 180), "translate": (0, 1), "zoom": (0, 0.95), "shear": (0, 60),
           "brightness": (0, 1), "contrast": (0, 1)}


class AugmentWarning(UserWarning):
    """An augmentation spec that parses but is probably not what was meant (rotate=0.2)."""


@dataclass(frozen=True)
class Augment:
    """Random augmentation of a batch of raw-pixel images (``(N, C, H, W)``, 0..255)."""

    rotate: float = 0.0
    translate: float = 0.0
    zoom: float = 0.0
    shear: float = 0.0
    flip: str = ""
    brightness: float = 0.0
    contrast: float = 0.0
    fill: str = "reflect"

    def __repr__(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if getattr(self, f.name) != f.default]
        return f"Augment({', '.join(parts)})"

    @property
    def spec(self) -> str:
        """The canonical spec string (parses back to an equal Augment)."""
        return ",".join(f"{f.name}={_number(getattr(self, f.name))}" if isinstance(getattr(self, f.name), float)
                        else f"{f.name}={getattr(self, f.name)}"
                        for f in fields(self) if getattr(self, f.name) != f.default)

    @property
    def active(self) -> bool:
        return bool(self.spec.replace(f"fill={self.fill}", "").strip(","))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- the batched transform ----------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The random parameters of ``n`` copies (degrees, fractions of the size, factors, flips),
        drawn in the order :meth:`__call__` always drew them, so a seed gives the same batch."""
        def u(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) * (hi - lo) + lo

        p: dict[str, torch.Tensor] = {}
        if self.rotate or self.translate or self.zoom or self.shear:
            p["rotate"], p["tx"], p["ty"] = u(-self.rotate, self.rotate), u(-self.translate, self.translate), \
                u(-self.translate, self.translate)
            p["zoom"], p["shear"] = u(1 - self.zoom, 1 + self.zoom), u(-self.shear, self.shear)
        if "h" in self.flip:
            p["flip_h"] = torch.rand(n, generator=generator) < 0.5
        if "v" in self.flip:
            p["flip_v"] = torch.rand(n, generator=generator) < 0.5
        if self.contrast:
            p["contrast"] = u(1 - self.contrast, 1 + self.contrast)
        if self.brightness:
            p["brightness"] = u(1 - self.brightness, 1 + self.brightness)
        return p

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Augmented float copy of a batch (values stay in the input's 0..255 range); ``params``
        from :meth:`sample`, else drawn now."""
        x = x.float() if not x.is_floating_point() else x
        n, _, h, w = x.shape
        dev = x.device
        p = self.sample(n, generator) if params is None else params
        if "rotate" in p:
            x = affine_batch(x, p["rotate"], p["tx"] * w, p["ty"] * h, p["zoom"], p["shear"], fill=self.fill)
        if "flip_h" in p:
            x = torch.where(p["flip_h"].to(dev).view(n, 1, 1, 1), x.flip(-1), x)
        if "flip_v" in p:
            x = torch.where(p["flip_v"].to(dev).view(n, 1, 1, 1), x.flip(-2), x)
        if "contrast" in p:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * p["contrast"].to(dev).view(n, 1, 1, 1) + mean
        if "brightness" in p:
            x = x * p["brightness"].to(dev).view(n, 1, 1, 1)
        return x.clamp(0, 255)

    def warnings(self) -> list[str]:
        """What in this augmentation is probably not what was meant."""
        if 0 < self.rotate < 1:
            r, deg = _number(self.rotate), _number(round(self.rotate * 360, 6))
            hint = (f"write rotate={r}turn ({deg} degrees)" if self.rotate <= 0.5
                    else f"that is {deg} degrees, more than the 180 rotate allows")
            return [f"augment: rotate={r} is {r} degrees, almost no rotation; Keras' RandomRotation({r}) is a "
                    f"fraction of a turn: {hint}"]
        return []

    def to_torchvision(self):
        """The per-sample torchvision ``v2.Compose`` with the same parameters."""
        from torchvision.transforms import v2

        ts: list[Any] = []
        if self.rotate or self.translate or self.zoom or self.shear:
            ts.append(v2.RandomAffine(self.rotate, translate=(self.translate,) * 2 if self.translate else None,
                                      scale=(1 - self.zoom, 1 + self.zoom) if self.zoom else None,
                                      shear=self.shear or None))
        if "h" in self.flip:
            ts.append(v2.RandomHorizontalFlip())
        if "v" in self.flip:
            ts.append(v2.RandomVerticalFlip())
        if self.brightness or self.contrast:
            ts.append(v2.ColorJitter(brightness=self.brightness or None, contrast=self.contrast or None))
        return v2.Compose(ts)

    def preview(self, image: Any, n: int = 9, seed: int = 0, grid: tuple[int, int] | None = None,
                labels: bool = True):
        """A grid (PIL) of augmented copies of one image, the first being the original: ``grid``
        (rows, columns), else ``n`` copies in a square-ish grid. Each copy is labelled with what
        was drawn for it (rotation in degrees, shift in pixels, zoom, shear, flips, brightness,
        contrast) unless ``labels`` is False."""
        from PIL import Image

        if grid is not None:
            rows, cols = int(grid[0]), int(grid[1])
            if not (1 <= rows <= 20 and 1 <= cols <= 20):
                raise SpecError(f"grid {rows}x{cols}: rows and columns must be between 1 and 20", param="grid")
            n = rows * cols
        else:
            if not 1 <= n <= 400:
                raise SpecError(f"n={n}: between 1 and 400 copies", param="n")
            cols = int(math.ceil(math.sqrt(n)))
            rows = int(math.ceil(n / cols))
        img = load_image(image, mode=None)
        arr = np.asarray(img)
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        batch = t.unsqueeze(0).repeat(n, 1, 1, 1)
        params = self.sample(n, torch.Generator().manual_seed(seed))
        out = self(batch, params=params)
        out[0] = batch[0].float()
        out = out.round().to(torch.uint8)
        h, w = out.shape[-2:]
        pics = [Image.fromarray(o[0].numpy() if o.shape[0] == 1 else o.permute(1, 2, 0).numpy()) for o in out]
        titles = [["original" if i == 0 else _describe(params, i, w, h)
                   for i in range(r * cols, min(n, (r + 1) * cols))] for r in range(rows)] if labels else None
        cells = [pics[r * cols:(r + 1) * cols] for r in range(rows)]
        # small images (28x28 digits, 32x30 faces) enlarged by a whole factor, large ones shrunk to ~160 px
        scale = max(1, 112 // max(w, h)) if max(w, h) <= 160 else 160 / max(w, h)
        cell = (max(round(w * scale), 96 if labels else 1), round(h * scale))
        return tile(cells, col_titles=titles, cell=cell, pad=4, font_size=11,
                    title=f"{n - 1} augmented copies, original top left", subtitle=self.spec or "no augmentation")


def _describe(p: dict[str, torch.Tensor], i: int, w: int, h: int) -> str:
    """What was drawn for copy ``i``, in two short lines."""
    geo, rest = [], []
    if "rotate" in p:
        geo.append(f"{p['rotate'][i].item():+.0f}°")
        if p["tx"][i].item() or p["ty"][i].item():
            geo.append(f"{p['tx'][i].item() * w:+.0f},{p['ty'][i].item() * h:+.0f}px")
        if p["zoom"][i].item() != 1:
            geo.append(f"x{p['zoom'][i].item():.2f}")
        if p["shear"][i].item():
            geo.append(f"sh{p['shear'][i].item():+.0f}°")
    flips = ("h" if "flip_h" in p and p["flip_h"][i] else "") + ("v" if "flip_v" in p and p["flip_v"][i] else "")
    if flips:
        rest.append(f"flip {flips}")
    if "brightness" in p:
        rest.append(f"b{p['brightness'][i].item():.2f}")
    if "contrast" in p:
        rest.append(f"c{p['contrast'][i].item():.2f}")
    return "\n".join(part for part in (" ".join(geo), " ".join(rest)) if part) or f"copy {i}"


def _number(v: float) -> str:
    """``v`` short (``15``, ``0.1``) when ``:g`` keeps it exactly, else every digit (``repr``)."""
    short = f"{v:g}"
    return short if float(short) == v else repr(v)


def affine_batch(x: torch.Tensor, angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                 scale: torch.Tensor, shear: torch.Tensor, fill: str = "zeros") -> torch.Tensor:
    """One affine per image in a single ``grid_sample`` (bilinear), about the image centre.

    Per-image ``angle`` (degrees, clockwise on screen as in torchvision), translation
    ``tx``/``ty`` in pixels, ``scale`` and x-``shear`` (degrees); torchvision's
    ``v2.functional.affine`` conventions.
    """
    n, _, h, w = x.shape
    dev = x.device
    a = angle.to(dev, torch.float32) * (math.pi / 180)
    sh = -shear.to(dev, torch.float32) * (math.pi / 180)
    s = scale.to(dev, torch.float32)
    # forward map in pixel units (y down): p_out = s * R(a) * Shear(sh) * p_in + t; grid_sample wants the inverse
    cos, sin, tan = torch.cos(a), torch.sin(a), torch.tan(sh)
    m = torch.stack([torch.stack([cos, cos * tan - sin], -1),
                     torch.stack([sin, sin * tan + cos], -1)], -2) * s.view(n, 1, 1)
    inv = torch.linalg.inv(m)
    d = torch.tensor([w / 2.0, h / 2.0], device=dev)
    theta_lin = inv * (1.0 / d).view(1, 2, 1) * d.view(1, 1, 2)  # D^-1 inv D, normalised coordinates
    t_norm = torch.stack([tx.to(dev, torch.float32) / d[0], ty.to(dev, torch.float32) / d[1]], -1)
    theta = torch.cat([theta_lin, -(theta_lin @ t_norm.unsqueeze(-1))], -1)
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    mode = {"reflect": "reflection", "border": "border", "zeros": "zeros"}[fill]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=mode, align_corners=False)


def parse_augment(spec: "str | Augment | None") -> Augment:
    """Parse ``"rotate=15,translate=0.1,zoom=0.1,flip=h"``; a bad token raises SpecError naming it."""
    if isinstance(spec, Augment):
        return spec
    if spec is None or not str(spec).strip() or str(spec).strip().lower() in ("none", "off"):
        return Augment()
    allowed = "; ".join(f"{k} ({v})" for k, v in _ALLOWED.items())
    values: dict[str, Any] = {}
    for token in str(spec).split(","):
        token = token.strip()
        if not token:
            continue
        key, eq, val = token.partition("=")
        key = key.strip().lower()
        if key not in _ALLOWED:
            raise SpecError(f"augment: unknown token {token!r}{closest(key, _ALLOWED)}; allowed: {allowed}",
                            param="augment")
        if not eq or not val.strip():
            raise SpecError(f"augment: token {token!r} needs a value: {key}=... ({_ALLOWED[key]})", param="augment")
        val = val.strip().lower()
        if key == "flip":
            if val not in ("h", "v", "hv", "vh", "none"):
                raise SpecError(f"augment: token {token!r}: flip takes h, v or hv", param="augment")
            values[key] = "" if val == "none" else "".join(sorted(val))[::-1]
        elif key == "fill":
            if val not in ("reflect", "border", "zeros"):
                raise SpecError(f"augment: token {token!r}: fill takes reflect, border or zeros", param="augment")
            values[key] = val
        else:
            unit = 1.0
            if key == "rotate" and val.endswith(("turn", "deg")):
                unit = 360.0 if val.endswith("turn") else 1.0
                val = val.removesuffix("turn").removesuffix("deg").strip()
            try:
                num = float(val) * unit
            except ValueError:
                raise SpecError(f"augment: token {token!r}: {val!r} is not a number ({_ALLOWED[key]})",
                                param="augment") from None
            lo, hi = _LIMITS[key]
            if not lo <= num <= hi:
                raise SpecError(f"augment: token {token!r}: {key} must be between {lo} and {hi}", param="augment")
            values[key] = num
    aug = Augment(**values)
    for message in aug.warnings():
        warnings.warn(message, AugmentWarning, stacklevel=2)
    return aug
