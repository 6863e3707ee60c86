"""``Explanation``: heatmaps of M methods for N images x T targets, a :class:`~convlens.view.View`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ...errors import SpecError
from ...images import load_image
from ...models.lensmodel import ClassScore
from ...render.colors import check_cmap, font
from ...render.files import OutDir, Saved, unique_stems
from ...render.grid import colorbar, grid, stack
from ...render.overlay import overlay, to_rgb
from ...view import View
from .registry import METHODS as REGISTRY
from .targets import method_slug, parse_methods


@dataclass(eq=False)
class Explanation(View):
    """Heatmaps with a methods axis, and what is needed to show them.

    ``maps``: ``(M, N, T, H, W)`` float32 in [0, 1] on the model's input grid (on the model's
    device), one slice per method of ``methods``; ``heatmaps``: the ``(N, T, H, W)`` maps when
    there is one method.  ``targets[i][t]``: the :class:`ClassScore` explained.  ``layers``:
    the CAM layer(s) (pixel attributions are on the ``"input"``).  ``ex["gradcam"]``: the
    explanation of one method, ``ex.take([0, 2])``: of some images.
    """

    methods: list[str]
    layers: list[str]
    maps: torch.Tensor
    targets: list[list[ClassScore]]
    images: list[str]
    config: Any  # the model's Preprocess
    sizes: list[tuple[int, int]] | None = None
    sources: list[Any] = field(default_factory=list, repr=False)
    inputs: torch.Tensor | None = field(default=None, repr=False)  # for tensor input: to draw overlays
    model_name: str = "model"

    # -- shape and selection ------------------------------------------------
    def __len__(self) -> int:
        return self.maps.shape[1]

    @property
    def method(self) -> str:
        """The first method."""
        return self.methods[0]

    @property
    def heatmaps(self) -> torch.Tensor:
        """``(N, T, H, W)``: the maps of the one method (see ``ex["gradcam"]`` for several)."""
        if len(self.methods) != 1:
            raise SpecError(f"this explanation holds {len(self.methods)} methods ({', '.join(self.methods)}); "
                            f"pick one with ex[{self.methods[0]!r}] or read ex.maps", param="method")
        return self.maps[0]

    def layer_of(self, method: str | None = None) -> str:
        """The layer(s) a method explains, comma-joined (``"input"`` for pixel attributions and guided
        backprop, ``"input+biases"`` for FullGrad, ``"attention"`` for the attention maps)."""
        m = self.methods[0] if method is None else method
        info = REGISTRY.get(m)
        if info is not None and info.at_layer and self.layers:
            return ",".join(self.layers)
        if info is not None and info.family == "attention":
            return "attention"
        return "input+biases" if m == "fullgrad" else "input"

    @property
    def layer(self) -> str:
        """The CAM layer(s) of the first method, comma-joined (``"input"`` for a pixel method)."""
        return self.layer_of(self.method)

    def _m(self, method: str | None) -> int:
        if method is None:
            return 0
        name = parse_methods(method)[0]
        if name not in self.methods:
            raise SpecError(f"method {method!r} is not in this explanation ({', '.join(self.methods)})",
                            param="method")
        return self.methods.index(name)

    def __getitem__(self, method: str) -> "Explanation":
        k = self._m(method)
        return replace(self, methods=[self.methods[k]], maps=self.maps[k:k + 1])

    def take(self, indices: Sequence[int]) -> "Explanation":
        """The explanation of the images at ``indices`` (in that order)."""
        idx = [int(i) for i in indices]
        for i in idx:
            self._check(i, 0)
        pick = torch.tensor(idx, dtype=torch.long, device=self.maps.device)
        return replace(self, maps=self.maps.index_select(1, pick), targets=[self.targets[i] for i in idx],
                       images=[self.images[i] for i in idx],
                       sizes=None if self.sizes is None else [self.sizes[i] for i in idx],
                       sources=[self.sources[i] if i < len(self.sources) else None for i in idx],
                       inputs=None if self.inputs is None else self.inputs[pick.to(self.inputs.device)])

    def __repr__(self) -> str:
        M, n, t, h, w = self.maps.shape
        return (f"Explanation({', '.join(self.methods)}, layer={self.layer!r}, images={n}, targets={t}, "
                f"grid={h}x{w})")

    # -- maps onto the original picture -------------------------------------
    def _check(self, i: int, t: int) -> None:
        n, T = self.maps.shape[1:3]
        if not (-n <= i < n):
            raise SpecError(f"image index {i} out of range (0-{n - 1})")
        if not (-T <= t < T):
            raise SpecError(f"target index {t} out of range (0-{T - 1})")

    def original_size(self, i: int) -> tuple[int, int]:
        """(width, height) of the original picture (the input grid for tensor input)."""
        if self.sizes is None:
            return self.maps.shape[-1], self.maps.shape[-2]
        return self.sizes[i]

    def heatmap(self, i: int = 0, t: int = 0, method: str | None = None,
                size: str | tuple[int, int] = "original") -> np.ndarray:
        """Heatmap ``i, t`` of ``method`` (default: the first) as float32 ``(h, w)`` in [0, 1].

        ``size="original"``: on the original picture, through the preprocessing geometry
        (resize + crop); pixels the crop cut off are 0.  ``"input"``: the model's input grid.
        ``(w, h)``: the input-grid map resized to that size.
        """
        if method in ("original", "input") or isinstance(method, tuple):  # heatmap(i, t, "input")
            method, size = None, method
        self._check(i, t)
        m = self.maps[self._m(method), i, t]
        if size == "input" or (size == "original" and self.sizes is None):
            return m.float().cpu().numpy()
        if size == "original":
            return self.to_original(m[None, None], self.sizes[i])[0, 0].cpu().numpy()
        w, h = size
        return F.interpolate(m[None, None].float(), size=(h, w), mode="bilinear",
                             align_corners=False)[0, 0].clamp(0, 1).cpu().numpy()

    def to_original(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Map ``(B, 1, H, W)`` input-grid maps onto an original picture of ``size`` = (w, h)."""
        W0, H0 = size
        x0, y0, x1, y1 = self.config.crop_box(W0, H0)
        dev = maps.device
        xs = (torch.arange(W0, device=dev, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        ys = (torch.arange(H0, device=dev, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid_ = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(maps.shape[0], -1, -1, -1)
        out = F.grid_sample(maps.float(), grid_, mode="bilinear", padding_mode="border", align_corners=False)
        inside = ((gx >= -1) & (gx <= 1) & (gy >= -1) & (gy <= 1)).to(out.dtype)
        return (out * inside).clamp(0, 1)

    def peak(self, i: int = 0, t: int = 0, method: str | None = None) -> tuple[int, int]:
        """(x, y) of the heatmap's maximum on the original picture (input grid for tensor input)."""
        self._check(i, t)
        m = self.maps[self._m(method), i, t]
        H, W = m.shape
        flat = int(torch.argmax(m))
        py, px = divmod(flat, W)
        if self.sizes is None:
            return px, py
        x0, y0, x1, y1 = self.config.crop_box(*self.sizes[i])
        ox = x0 + (px + 0.5) * (x1 - x0) / W
        oy = y0 + (py + 0.5) * (y1 - y0) / H
        w0, h0 = self.sizes[i]
        return min(int(ox), w0 - 1), min(int(oy), h0 - 1)

    # -- pictures ----------------------------------------------------------
    def image(self, i: int = 0) -> Image.Image:
        """The original picture (RGB PIL), or the de-normalised input for tensor input."""
        src = self.sources[i] if i < len(self.sources) else None
        if src is None:
            if self.inputs is None:
                raise SpecError("no picture kept for this explanation")
            return to_rgb(self.inputs[i], self.config)
        if isinstance(src, (str, os.PathLike)):
            return load_image(src)
        return to_rgb(src)

    def input_view(self, i: int = 0) -> Image.Image:
        """The picture as the model saw it: cropped and resized to the input grid."""
        if self.inputs is not None:
            return to_rgb(self.inputs[i], self.config)
        img = self.image(i)
        box = self.config.crop_box(*img.size)
        return img.crop(tuple(round(v) for v in box)).resize((self.config.width, self.config.height),
                                                             Image.BILINEAR)

    def overlay(self, i: int = 0, t: int = 0, method: str | None = None, cmap: str = "jet",
                alpha: float = 0.5, size: str = "original") -> Image.Image:
        """The heatmap over the picture, as a PIL image (``size="input"``: on the model's input)."""
        if size == "input" or self.sizes is None:
            return overlay(self.input_view(i), self.heatmap(i, t, method, "input"), cmap=cmap, alpha=alpha)
        return overlay(self.image(i), self.heatmap(i, t, method, "original"), cmap=cmap, alpha=alpha,
                       box=self.seen_box(i))

    def seen_box(self, i: int = 0) -> tuple[float, float, float, float] | None:
        """``(x0, y0, x1, y1)``: the part of original picture ``i`` the model saw (its centre
        crop), or None when it saw all of it (a plain resize, or tensor input)."""
        if self.sizes is None:
            return None
        W, H = self.sizes[i]
        x0, y0, x1, y1 = self.config.crop_box(W, H)
        if round(x0) <= 0 and round(y0) <= 0 and round(x1) >= W and round(y1) >= H:
            return None
        return x0, y0, x1, y1

    def title(self, i: int, t: int) -> str:
        s = self.targets[i][t]
        if s.probability != s.probability:  # NaN: a score without a probability (raw outputs, an embedding)
            return s.label.split(",")[0]
        return f"{s.label.split(',')[0]} ({s.probability:.1%})"

    def figure(self, image: int = 0, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
        """Methods (rows) x targets (columns) overlays of one image, the picture first."""
        return self._grid(image, cmap, alpha, [self.maps[k, image] for k in range(len(self.methods))])

    def _grid(self, i: int, cmap: str, alpha: float, per_method: list[torch.Tensor],
              picture: Image.Image | None = None) -> Image.Image:
        """The figure of image ``i`` from its maps per method ``(T, h, w)`` (input grid or original)."""
        self._check(i, 0)
        T = self.maps.shape[2]
        if picture is None:
            picture = self.image(i) if self.sizes is not None else self.input_view(i)
        rows = []
        for maps in per_method:
            if self.sizes is not None and tuple(maps.shape[-2:]) != (picture.height, picture.width):
                maps = self.to_original(maps.unsqueeze(1), self.sizes[i])[:, 0]
            arr = maps.float().cpu().numpy()
            box = self.seen_box(i)
            rows.append([picture] + [overlay(picture, arr[t], cmap=cmap, alpha=alpha, box=box) for t in range(T)])
        col_titles = ["picture"] + [self.title(i, t) for t in range(T)]
        name = Path(self.images[i]).name if self.sizes is not None else self.images[i]
        cell = _cell(picture.size)
        body = grid(rows, row_titles=list(self.methods), col_titles=col_titles, cell=cell,
                    title=f"{name} - {self.model_name}, layer {self.layer_of(self.methods[0])}")
        note = ("each map scaled to its own maximum" +
                ("; dashed box: the centre crop the model saw; outside it, washed out: cut off, not seen"
                 if self.seen_box(i) is not None else ""))
        return stack(body, _legend(min(300, body.width - 12), cmap, note), pad=0)

    # -- export ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Methods, layers and, per image, each target with its peak per method (no pixel data).

        ``peak`` is the first method's, ``peaks`` every method's."""
        T = self.maps.shape[2]
        return {
            "methods": list(self.methods), "method": self.method, "layer": self.layer,
            "layers": list(self.layers), "model": self.model_name, "grid": list(self.maps.shape[-2:]),
            "images": [{
                "image": self.images[i],
                "size": list(self.original_size(i)),
                "targets": [dict(self.targets[i][t].to_dict(), peak=list(self.peak(i, t)),
                                 peaks={m: list(self.peak(i, t, m)) for m in self.methods})
                            for t in range(T)],
            } for i in range(len(self))],
        }

    def records(self) -> list[dict[str, Any]]:
        """One dict per image x method x target, as :meth:`save` writes them (files ``None``)."""
        return [{"image": self.images[i], "method": m, "layer": self.layer_of(m), "target": s.to_dict(),
                 "heatmap": None, "overlay": None, "peak": list(self.peak(i, t, m))}
                for i in range(len(self)) for m in self.methods for t, s in enumerate(self.targets[i])]

    def save(self, out_dir: str | os.PathLike, cmap: str = "jet", alpha: float = 0.5,
             stems: Sequence[str] | None = None) -> Saved:
        """Write per image ``<stem>/<method>_<class>.npy`` (float32 in [0, 1], the original
        picture's height x width; role ``heatmap``), ``.png`` (the overlay; role ``overlay``),
        ``_heatmap.png`` (the raw map as an 8-bit grey PNG, 0-255 for 0-1, the same size; role
        ``heatmap_png``) and ``<stem>/grid.png`` (methods x targets with a colour bar; role
        ``grid``), each atomically.  Method stems
        are distinct (``gradcam++`` -> ``gradcampp``).  ``stems``: the folder per image
        (default: the images' safe, distinct names)."""
        check_cmap(cmap)
        if not 0.0 <= alpha <= 1.0:
            raise SpecError(f"alpha must be between 0 and 1 (got {alpha})", param="alpha")
        out = OutDir(out_dir)
        stems = list(stems) if stems is not None else unique_stems(self.images)
        T = self.maps.shape[2]
        for i in range(len(self)):
            picture = self.image(i) if self.sizes is not None else self.input_view(i)
            per_method = []
            for k, m in enumerate(self.methods):
                # all targets of one image mapped back in one call
                maps = self.maps[k, i]
                if self.sizes is not None:
                    maps = self.to_original(maps.unsqueeze(1), self.sizes[i])[:, 0]
                per_method.append(maps)
                arr = maps.float().cpu().numpy()
                for t in range(T):
                    s = self.targets[i][t]
                    stem = f"{stems[i]}/{method_slug(m)}_{s.index}"
                    npy = out.npy("heatmap", f"{stem}.npy", arr[t].astype(np.float32))
                    png = out.png("overlay", f"{stem}.png",
                                  overlay(picture, arr[t], cmap=cmap, alpha=alpha, box=self.seen_box(i)))
                    out.png("heatmap_png", f"{stem}_heatmap.png", heat_png(arr[t]))
                    out.record(image=self.images[i], method=m, layer=self.layer_of(m), target=s.to_dict(),
                               heatmap=str(npy), overlay=str(png), peak=list(self.peak(i, t, m)))
            out.png("grid", f"{stems[i]}/grid.png", self._grid(i, cmap, alpha, per_method, picture))
        return out.saved()


def heat_png(values: np.ndarray) -> Image.Image:
    """A heatmap in [0, 1] as an 8-bit grey picture (0 -> black, 1 -> white)."""
    return Image.fromarray(np.clip(np.rint(np.asarray(values, dtype=np.float32) * 255), 0, 255).astype(np.uint8), "L")


def _cell(size: tuple[int, int]) -> tuple[int, int]:
    """Grid cells for pictures of ``size`` = (w, h): small ones enlarged by a whole factor to
    about 224 pixels (28 -> 8x, 64x60 -> 3x), larger ones shrunk to 224, aspect kept."""
    w, h = size
    k = max(1, 224 // max(w, h))
    if k > 1:
        return w * k, h * k
    s = 224 / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _legend(width: int, cmap: str, note: str) -> Image.Image:
    """The colour bar of the overlays (0 = low, 1 = high importance), the note's parts (split
    at ``"; "``) as lines beside it."""
    bar = colorbar(width, 0.0, 1.0, cmap)
    f = font(12)
    d = ImageDraw.Draw(bar)
    mid = "importance"
    d.text(((width - d.textlength(mid, font=f)) / 2, bar.height - 16), mid, fill=(108, 117, 125), font=f)
    lines = note.split("; ")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    tw = int(max(probe.textlength(t, font=f) for t in lines)) + 8
    out = Image.new("RGB", (width + 30 + tw, max(bar.height, 16 * len(lines)) + 10), (255, 255, 255))
    out.paste(bar, (12, 2))
    draw = ImageDraw.Draw(out)
    for k, text in enumerate(lines):
        draw.text((width + 24, 2 + 16 * k), text, fill=(108, 117, 125), font=f)
    return out
