"""Where the network looks: the CAM family and pixel attributions behind one verb.

``explain(model, images, method, target, layer)`` returns an :class:`Explanation`:
heatmaps ``(N, T, H, W)`` in [0, 1] on the model's input grid (kept on the
model's device), the targets (index, label, probability), the layer(s) and the
method.  ``.heatmap(i, t)`` maps a heatmap back onto the original picture
through the preprocessing geometry (resize + centre crop; what the crop cut
off is 0); ``.overlay(i, t)`` draws it; ``.save(dir)`` writes ``.npy`` + ``.png``
files.  Several methods at once give an :class:`Explanations` (one result per
method) computed from one shared forward/backward for all gradient CAMs.

Methods: gradient CAMs ``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``,
``layercam``, ``eigengradcam``; gradient-free ``eigencam``; perturbation
``scorecam``, ``ablationcam``; pixel attributions via Captum ``saliency``,
``smoothgrad``, ``ig``, ``occlusion``.

Example (needs the photo, so not a doctest)::

    import convlens as cl
    model = cl.load_model()
    ex = cl.explain(model, "both.png", target=["bull mastiff", "tabby cat"])
    ex.heatmaps.shape                       # (images, targets, 224, 224)
    # -> torch.Size([1, 2, 224, 224])
    ex.peak(0, 0)                           # (x, y) on the original picture
    ex.overlay(0, 1, cmap="turbo").save("cat.png")
    cl.explain(model, "both.png", method="gradcam,gradcam++,scorecam").save("out/")
"""

from __future__ import annotations

import io
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LayerError, SpecError, TargetError, closest
from ..models.labels import resolve_label
from ..models.lensmodel import ClassScore, LensModel, image_name
from . import cam_methods as cm
from .attribution import PIXEL_METHODS, attribute

METHODS = cm.CAM_METHODS + PIXEL_METHODS
_ALIASES = {
    "grad-cam": "gradcam", "gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "grad-cam++": "gradcam++",
    "xgrad-cam": "xgradcam", "hires-cam": "hirescam", "layer-cam": "layercam", "eigen-cam": "eigencam",
    "eigen-grad-cam": "eigengradcam", "score-cam": "scorecam", "ablation-cam": "ablationcam",
    "integratedgradients": "ig", "integrated-gradients": "ig", "smooth-grad": "smoothgrad",
}
#: Score-CAM's default number of channels (top-k by Grad-CAM contribution).
SCORECAM_CHANNELS = 128


# -- argument parsing ----------------------------------------------------------------------

def parse_methods(method: str | Sequence[str]) -> list[str]:
    """``"gradcam,scorecam"`` or a list to validated method names (order kept, no repeats)."""
    items = method.split(",") if isinstance(method, str) else [m for part in method for m in str(part).split(",")]
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name not in METHODS:
            raise SpecError(f"unknown method {raw.strip()!r}{closest(name, METHODS)} "
                            f"(methods: {', '.join(METHODS)})")
        if name not in out:
            out.append(name)
    if not out:
        raise SpecError("no method given (methods: " + ", ".join(METHODS) + ")")
    return out


def _target_spec(target: Any, class_names: Sequence[str] = ()) -> list[Any]:
    """Normalise a target request to a list of items: int, label str, or ('top', k)."""
    if target is None:
        return [("top", 1)]
    if isinstance(target, (int, np.integer)):
        return [int(target)]
    if isinstance(target, str):
        parts = [p.strip() for p in target.split(",")] if "," in target and not _is_label(target, class_names) else [target.strip()]
        out: list[Any] = []
        for p in parts:
            low = p.lower().replace(" ", "")
            if low.startswith("top") and low[3:].isdigit():
                k = int(low[3:])
                if k < 1:
                    raise TargetError(f"target {p!r}: top-k needs k >= 1")
                out.append(("top", k))
            elif low in ("top", "pred", "predicted"):
                out.append(("top", 1))
            elif p:
                out.append(p)
        return out or [("top", 1)]
    if isinstance(target, Iterable):
        out = []
        for t in target:
            out.extend(_target_spec(t, class_names))
        if not out:
            raise TargetError("empty target list")
        return out
    raise TargetError(f"target must be a class index, a label, 'topK' or a list (got {type(target).__name__})")


def _is_label(text: str, class_names: Sequence[str]) -> bool:
    """Whether a string with commas is itself a class name (ImageNet names have commas)."""
    low = " ".join(text.lower().split())
    return any(low == " ".join(n.lower().split()) for n in class_names)


def resolve_targets(spec: list[Any], logits: torch.Tensor, class_names: list[str]) -> torch.Tensor:
    """``(N, T)`` class indices for the images whose ``logits`` are given."""
    N, K = logits.shape
    cols: list[torch.Tensor] = []
    top = None
    for item in spec:
        if isinstance(item, tuple):
            k = min(item[1], K)
            if top is None or top.shape[1] < k:
                top = logits.topk(k, dim=1).indices
            cols.extend(top[:, j] for j in range(k))
        else:
            names = class_names if len(class_names) == K else [f"class {i}" for i in range(K)]
            idx = resolve_label(item, names)
            cols.append(torch.full((N,), idx, dtype=torch.long, device=logits.device))
    return torch.stack(cols, dim=1)


# -- layers ----------------------------------------------------------------------------------

_ORDER_CACHE: "weakref.WeakKeyDictionary[nn.Module, list[tuple[str, tuple[int, ...]]]]" = weakref.WeakKeyDictionary()


def _completion_order(lm: LensModel) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every module, in the order their forwards finish (one small forward)."""
    cached = _ORDER_CACHE.get(lm.module)
    if cached is not None:
        return cached
    order: list[tuple[str, tuple[int, ...]]] = []
    handles = []

    def make(name: str):
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor):
                order.append((name, tuple(out.shape[1:])))
        return hook

    was = lm.module.training
    try:
        for n, m in lm.module.named_modules():
            if n:
                handles.append(m.register_forward_hook(make(n)))
        lm.module.eval()
        with torch.inference_mode(False), torch.no_grad():
            lm.module(lm.example_input())
    finally:
        for h in handles:
            h.remove()
        lm.module.train(was)
    _ORDER_CACHE[lm.module] = order
    return order


def default_layer(model: Any) -> str:
    """The automatic target layer: the last module (in the order forwards finish) whose
    output is a feature map larger than 1x1, as TorchCAM's ``locate_candidate_layer`` does.

    ``bn2`` for EfficientNet-Lite0 (timm), ``layer4`` for a torchvision ResNet.
    """
    lm = _lens(model)
    order = _completion_order(lm)
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in lm.module.modules())
    if not has_conv:
        raise LayerError(f"{lm.name} has no convolutional layer to explain; pass --layer NAME explicitly "
                         "(list them with `convlens layers`)")
    for name, shape in reversed(order):
        if len(shape) == 3 and (shape[1] > 1 or shape[2] > 1):
            return name
    raise LayerError(f"{lm.name} has no layer with a spatial output larger than 1x1; pass --layer NAME")


def check_layers(lm: LensModel, layers: Sequence[str]) -> list[str]:
    """Validate layer names: known modules with a (C, H, W) output larger than 1x1."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in _completion_order(lm):
        shapes.setdefault(name, shape)
    out = []
    for name in layers:
        lm.get_layer(name)  # unknown name -> LayerError with the closest names
        shape = shapes.get(name)
        if shape is None:
            raise LayerError(f"layer {name!r} does not output a tensor in the forward pass; choose a feature-map layer")
        if len(shape) != 3:
            raise LayerError(f"layer {name!r} has no spatial output (its output is {'x'.join(map(str, shape)) or 'a scalar'}, "
                             f"not channels x height x width); try {default_layer(lm)!r}")
        if shape[1] * shape[2] <= 1:
            raise LayerError(f"layer {name!r} outputs a 1x1 map ({'x'.join(map(str, shape))}); "
                             f"a CAM needs a spatial map, try {default_layer(lm)!r}")
        if name not in out:
            out.append(name)
    return out


def _lens(model: Any) -> LensModel:
    if isinstance(model, LensModel):
        return model
    from ..models import load_model

    return load_model(model)


# -- inputs ----------------------------------------------------------------------------------

@dataclass
class _Inputs:
    batch: torch.Tensor  # (N, C, H, W) normalised, on the device
    names: list[str]
    sizes: list[tuple[int, int]] | None  # original (w, h), None for tensor input
    sources: list[Any]  # what to reload the originals from (paths, PIL images), or None


def _prepare(lm: LensModel, images: Any, workers: int | None = None) -> _Inputs:
    if isinstance(images, torch.Tensor) and images.ndim in (3, 4) and images.dtype.is_floating_point \
            and images.shape[-3] == lm.config.channels and tuple(images.shape[-2:]) == (lm.config.height, lm.config.width):
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        return _Inputs(batch.detach().to(lm.device), [f"image {i}" for i in range(batch.shape[0])], None, [None] * batch.shape[0])
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        raise SpecError(f"a tensor batch must be preprocessed to {tuple(lm.config.input_size)} per image "
                        f"(got {tuple(images.shape[1:])}); pass images or use model.preprocess")
    from ..models.lensmodel import _as_list

    items = _as_list(images)
    transform = lm.config.transform

    def one(src):
        pil = lm.load(src)
        return transform(pil), pil.size, pil

    workers = workers or min(4, os.cpu_count() or 1, len(items))
    if workers > 1 and len(items) > 2:
        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(one, items))
    else:
        loaded = [one(s) for s in items]
    batch = torch.stack([t for t, _, _ in loaded]).to(lm.device)
    names = [image_name(s, i) for i, s in enumerate(items)]
    # keep paths (cheap) to reload originals lazily; keep in-memory pictures as loaded
    sources = [s if isinstance(s, (str, os.PathLike)) else pil for s, (_, _, pil) in zip(items, loaded)]
    return _Inputs(batch, names, [size for _, size, _ in loaded], sources)


# -- results ---------------------------------------------------------------------------------

@dataclass
class Explanation:
    """Heatmaps of one method for N images x T targets, with what is needed to show them.

    ``heatmaps``: ``(N, T, H, W)`` float32 in [0, 1] on the model's input grid (on
    the model's device).  ``targets[i][t]``: the :class:`ClassScore` explained.
    """

    method: str
    layers: list[str]
    heatmaps: torch.Tensor
    targets: list[list[ClassScore]]
    images: list[str]
    config: Any  # the model's Preprocess
    sizes: list[tuple[int, int]] | None = None
    sources: list[Any] = field(default_factory=list, repr=False)
    inputs: torch.Tensor | None = field(default=None, repr=False)  # for tensor input: to draw overlays
    model_name: str = "model"

    # -- shape -----------------------------------------------------------
    def __len__(self) -> int:
        return self.heatmaps.shape[0]

    @property
    def layer(self) -> str:
        return ",".join(self.layers)

    def __repr__(self) -> str:
        n, t, h, w = self.heatmaps.shape
        return f"Explanation({self.method!r}, layer={self.layer!r}, images={n}, targets={t}, grid={h}x{w})"

    # -- maps onto the original picture -------------------------------------
    def _check(self, i: int, t: int) -> None:
        n, T = self.heatmaps.shape[:2]
        if not (-n <= i < n):
            raise SpecError(f"image index {i} out of range (0-{n - 1})")
        if not (-T <= t < T):
            raise SpecError(f"target index {t} out of range (0-{T - 1})")

    def original_size(self, i: int) -> tuple[int, int]:
        """(width, height) of the original picture (the input grid for tensor input)."""
        if self.sizes is None:
            return self.heatmaps.shape[-1], self.heatmaps.shape[-2]
        return self.sizes[i]

    def heatmap(self, i: int = 0, t: int = 0, size: str | tuple[int, int] = "original") -> np.ndarray:
        """Heatmap ``i, t`` as float32 ``(h, w)`` in [0, 1].

        ``size="original"``: on the original picture, through the preprocessing
        geometry (resize + crop); pixels the crop cut off are 0.  ``"input"``: the
        model's input grid.  ``(w, h)``: the input-grid map resized to that size.
        """
        self._check(i, t)
        m = self.heatmaps[i, t]
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
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(maps.shape[0], -1, -1, -1)
        out = F.grid_sample(maps.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        inside = ((gx >= -1) & (gx <= 1) & (gy >= -1) & (gy <= 1)).to(out.dtype)
        return (out * inside).clamp(0, 1)

    def peak(self, i: int = 0, t: int = 0) -> tuple[int, int]:
        """(x, y) of the heatmap's maximum on the original picture (input grid for tensor input)."""
        self._check(i, t)
        m = self.heatmaps[i, t]
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

    def image(self, i: int = 0):
        """The original picture (RGB PIL), or the de-normalised input for tensor input."""
        from ..render.overlay import to_rgb

        src = self.sources[i] if i < len(self.sources) else None
        if src is None:
            if self.inputs is None:
                raise SpecError("no picture kept for this explanation")
            return to_rgb(self.inputs[i], self.config)
        if isinstance(src, (str, os.PathLike)):
            from ..images import load_image

            return load_image(src)
        return to_rgb(src)

    def overlay(self, i: int = 0, t: int = 0, cmap: str = "jet", alpha: float = 0.5,
                size: str = "original"):
        """The heatmap over the picture, as a PIL image (``size="input"``: on the model's input)."""
        from ..render.overlay import overlay, to_rgb

        if size == "input" or self.sizes is None:
            base = (to_rgb(self.inputs[i], self.config) if self.inputs is not None
                    else self._input_view(i))
            return overlay(base, self.heatmap(i, t, "input"), cmap=cmap, alpha=alpha)
        return overlay(self.image(i), self.heatmap(i, t, "original"), cmap=cmap, alpha=alpha)

    def _input_view(self, i: int):
        """The original picture cropped and resized to the model's input grid."""
        from PIL import Image

        img = self.image(i)
        box = self.config.crop_box(*img.size)
        return img.crop(tuple(round(v) for v in box)).resize((self.config.width, self.config.height), Image.BILINEAR)

    def title(self, i: int, t: int) -> str:
        s = self.targets[i][t]
        return f"{s.label.split(',')[0]} ({s.probability:.1%})"

    def grid(self, i: int = 0, cmap: str = "jet", alpha: float = 0.5):
        """One row: the picture and this method's overlay for each target."""
        return grid_image([self], i, cmap=cmap, alpha=alpha)

    def _repr_png_(self) -> bytes:
        from ..render.overlay import grid

        rows = [[self.overlay(i, t) for t in range(self.heatmaps.shape[1])] for i in range(len(self))]
        titles = [[self.title(i, t) for t in range(self.heatmaps.shape[1])] for i in range(len(self))]
        img = grid(rows, col_titles=titles, title=f"{self.method} @ {self.layer}")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    # -- export ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Method, layers and, per image, each target with its peak (no pixel data)."""
        return {
            "method": self.method, "layer": self.layer, "layers": list(self.layers), "model": self.model_name,
            "grid": list(self.heatmaps.shape[-2:]),
            "images": [{
                "image": self.images[i],
                "size": list(self.original_size(i)),
                "targets": [dict(self.targets[i][t].to_dict(), peak=list(self.peak(i, t)))
                            for t in range(self.heatmaps.shape[1])],
            } for i in range(len(self))],
        }

    def save(self, out: str | os.PathLike, cmap: str = "jet", alpha: float = 0.5,
             stems: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Write, per image and target, ``<stem>/<method>_<class>.npy`` (float32 in [0, 1],
        the original picture's height x width) and ``.png`` (overlay); returns the records."""
        return _save_many([self], out, cmap=cmap, alpha=alpha, stems=stems, grids=False)


class Explanations(dict):
    """Several methods' :class:`Explanation` of the same images and targets, by method name."""

    def __repr__(self) -> str:
        return "Explanations(" + ", ".join(repr(e) for e in self.values()) + ")"

    @property
    def first(self) -> Explanation:
        return next(iter(self.values()))

    def to_dict(self) -> dict[str, Any]:
        return {m: e.to_dict() for m, e in self.items()}

    def grid(self, i: int = 0, cmap: str = "jet", alpha: float = 0.5):
        """Methods (rows) x targets (columns) overlays of image ``i``, labels as titles."""
        return grid_image(list(self.values()), i, cmap=cmap, alpha=alpha)

    def save(self, out: str | os.PathLike, cmap: str = "jet", alpha: float = 0.5,
             stems: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every method's files (see :meth:`Explanation.save`) plus ``<stem>/grid.png`` per image."""
        return _save_many(list(self.values()), out, cmap=cmap, alpha=alpha, stems=stems, grids=True)

    def _repr_png_(self) -> bytes:
        from ..render.files import png_bytes

        return png_bytes(self.grid(0))


def grid_image(explanations: Sequence[Explanation], i: int = 0, cmap: str = "jet", alpha: float = 0.5):
    """Methods x targets grid PNG for image ``i``: the picture first, then one overlay per target."""
    from ..render.overlay import grid

    first = explanations[0]
    T = first.heatmaps.shape[1]
    picture = first.image(i) if first.sizes is not None else first.overlay(i, 0, alpha=0.0)
    rows = [[picture] + [e.overlay(i, t, cmap=cmap, alpha=alpha) for t in range(T)] for e in explanations]
    col_titles = ["picture"] + [first.title(i, t) for t in range(T)]
    row_titles = [e.method for e in explanations]
    name = Path(first.images[i]).name if first.sizes is not None else first.images[i]
    return grid(rows, row_titles=row_titles, col_titles=col_titles,
                title=f"{name} - {first.model_name}, layer {first.layer}")


def _stems(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        base = Path(n).stem if n else "image"
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base) or "image"
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append(base if k == 0 else f"{base}_{k + 1}")
    return out


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_") or "x"


def _save_many(exps: Sequence[Explanation], out: str | os.PathLike, cmap: str, alpha: float,
               stems: Sequence[str] | None, grids: bool) -> list[dict[str, Any]]:
    from ..render.files import save_png

    out = Path(out)
    first = exps[0]
    stems = list(stems) if stems is not None else _stems(first.images)
    records: list[dict[str, Any]] = []
    for i in range(len(first)):
        folder = out / stems[i]
        folder.mkdir(parents=True, exist_ok=True)
        for e in exps:
            T = e.heatmaps.shape[1]
            # all targets of one image mapped back in one call
            if e.sizes is not None:
                maps = e.to_original(e.heatmaps[i].unsqueeze(1), e.sizes[i])[:, 0].cpu().numpy()
            else:
                maps = e.heatmaps[i].float().cpu().numpy()
            for t in range(T):
                s = e.targets[i][t]
                stem = f"{_safe(e.method)}_{s.index}"
                npy = folder / f"{stem}.npy"
                tmp = folder / f"{stem}.npy.tmp"
                with open(tmp, "wb") as fh:
                    np.save(fh, maps[t].astype(np.float32))
                os.replace(tmp, npy)
                png = save_png(_overlay_from(e, i, maps[t], cmap, alpha), folder / f"{stem}.png")
                records.append({
                    "image": e.images[i], "method": e.method, "layer": e.layer, "target": s.to_dict(),
                    "heatmap": str(npy), "overlay": str(png), "peak": list(e.peak(i, t)),
                })
        if grids:
            save_png(grid_image(exps, i, cmap=cmap, alpha=alpha), folder / "grid.png")
    return records


def _overlay_from(e: Explanation, i: int, heat: np.ndarray, cmap: str, alpha: float):
    from ..render.overlay import overlay, to_rgb

    if e.sizes is None:
        base = to_rgb(e.inputs[i], e.config) if e.inputs is not None else e.image(i)
        return overlay(base, heat, cmap=cmap, alpha=alpha)
    return overlay(e.image(i), heat, cmap=cmap, alpha=alpha)


# -- the verb ----------------------------------------------------------------------------------

def scale_maps(per_layer: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Raw maps ``(N, T, h, w)`` per layer to heatmaps on ``size``: ReLU and min-max each layer's maps,
    upsample, average over layers, min-max again (as pytorch-grad-cam does)."""
    ups = [cm.upsample(cm.normalize_maps(c.float()), size) for c in per_layer]
    mean = ups[0] if len(ups) == 1 else torch.stack(ups).mean(0)
    return cm.normalize_maps(mean, relu=False)


def _channels_k(channels: Any, C: int, method: str) -> int | None:
    if channels is None:
        return min(SCORECAM_CHANNELS, C) if method == "scorecam" else None
    if isinstance(channels, str):
        if channels.strip().lower() == "all":
            return None
        if channels.strip().isdigit():
            channels = int(channels)
        else:
            raise SpecError(f"channels must be a number or 'all' (got {channels!r})")
    if int(channels) < 1:
        raise SpecError(f"channels must be at least 1 (got {channels})")
    return min(int(channels), C)


def _explain_batch(lm: LensModel, x: torch.Tensor, methods: list[str], spec: list[Any], layers: list[str],
                   channels: Any, batch_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """All methods for one batch: ({method: (n, T, H, W)}, targets (n, T), probabilities (n, T))."""
    module = lm.module
    size = tuple(x.shape[-2:])
    cam_methods = [m for m in methods if m in cm.CAM_METHODS]
    need_grad = any(m in cm.GRADIENT_CAMS for m in cam_methods)
    results: dict[str, torch.Tensor] = {}
    if cam_methods:
        cap = cm.LayerCapture(module, layers, gradients=need_grad)
        logits = cap.forward(x)
        targets = resolve_targets(spec, logits.detach(), lm.class_names)
        grads = cap.gradients(logits, targets) if need_grad else {}
        logits = logits.detach()
        acts = {n: a.detach() for n, a in cap.activations.items()}
        del cap
        T = targets.shape[1]
        raw_maps: dict[str, list[torch.Tensor]] = {}  # method -> raw maps per layer
        for m in cam_methods:
            per_layer = raw_maps[m] = []
            for name in layers:
                A = acts[name]
                if A.ndim != 4:
                    raise LayerError(f"layer {name!r} output has shape {tuple(A.shape[1:])}, not a feature map")
                if m in cm.GRADIENT_FORMULAS:
                    raw = cm.GRADIENT_FORMULAS[m](A, grads[name])
                elif m == "eigencam":
                    raw = cm.eigen_cam(A, T)
                elif m == "scorecam":
                    k = _channels_k(channels, A.shape[1], m)
                    # top-k channels by mean activation: class-independent, so one set of masked
                    # forwards serves every target (r >= 0.99 to the exact map at k=128 on
                    # EfficientNet-Lite0's 1,280 channels, see bench/cam_bench.py)
                    sel = cm._select_channels(A.float().mean(dim=(-2, -1)), k)
                    raw = cm.score_cam(module, x, A, targets, sel, batch_size=batch_size)
                else:  # ablationcam
                    k = _channels_k(channels, A.shape[1], m)
                    rank = A.float().abs().mean(dim=(-2, -1))
                    sel = cm._select_channels(rank, k)
                    raw = cm.ablation_cam(module, name, x, A, logits, targets, sel, batch_size=max(batch_size, 128))
                per_layer.append(raw)
        # every method's maps normalised and upsampled together: one pass over (n, methods x T, H, W)
        joint = scale_maps([torch.cat([raw_maps[m][k].float() for m in cam_methods], dim=1)
                            for k in range(len(layers))], size)
        results.update(zip(cam_methods, joint.split(T, dim=1)))
    else:
        with torch.inference_mode():
            logits = module(x).float()
        targets = resolve_targets(spec, logits, lm.class_names)
    probs = logits.float().softmax(-1).gather(1, targets)
    pixel = [m for m in methods if m in PIXEL_METHODS]
    if pixel:
        black = lm.config.normalize(torch.zeros_like(x))
        for m in pixel:
            results[m] = attribute(module, x, m, targets, baseline=black if m == "ig" else None,
                                   internal_batch_size=batch_size)
    return results, targets, probs


def explain(model: Any, images: Any, method: str | Sequence[str] = "gradcam", target: Any = None,
            layer: str | Sequence[str] | None = None, *, channels: int | str | None = None,
            batch_size: int = 32) -> Explanation | Explanations:
    """Heatmaps of where ``model`` looks for ``target`` in ``images``.

    ``model``: a :class:`LensModel` (or a name for :func:`load_model`).
    ``images``: a path, PIL image or array, a list of them, or a preprocessed
    batch tensor ``(N, C, H, W)``.  ``method``: one name or several
    (``"gradcam,gradcam++"`` or a list).  ``target``: None (the predicted
    class), a class index, a label (case-insensitive), ``"top3"``, or a list.
    ``layer``: a module path (see ``convlens layers``), several (their maps are
    averaged, as pytorch-grad-cam does), or None for :func:`default_layer`.
    ``channels``: for ``scorecam``/``ablationcam``, how many channels to
    perturb (the top-k channels by mean activation) or ``"all"`` for the exact
    methods; default 128 for Score-CAM and all for Ablation-CAM (which only
    reruns the layers after the target layer).

    One method gives an :class:`Explanation`, several an :class:`Explanations`.
    """
    lm = _lens(model)
    methods = parse_methods(method)
    spec = _target_spec(target, lm.class_names)
    # validate labels early (indices are checked against the class count here too)
    for item in spec:
        if not isinstance(item, tuple):
            resolve_label(item, lm.class_names)
    if batch_size < 1:
        raise SpecError(f"batch_size must be at least 1 (got {batch_size})")
    if channels is not None:
        _channels_k(channels, 1 << 30, "scorecam")
    needs_layer = any(m in cm.CAM_METHODS for m in methods)
    if layer is None:
        layers = [default_layer(lm)] if needs_layer else []
    else:
        names = [p.strip() for p in ([layer] if isinstance(layer, str) else list(layer)) for p in str(p).split(",")]
        names = [n for n in names if n]
        if not names:
            raise LayerError("empty layer name")
        layers = check_layers(lm, names)
    inputs = _prepare(lm, images)
    module = lm.module
    was_training = module.training
    grad_flags = [p.requires_grad for p in module.parameters()]
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    tgts, prbs = [], []
    try:
        module.eval()
        for start in range(0, inputs.batch.shape[0], batch_size):
            x = inputs.batch[start:start + batch_size]
            res, t, p = _explain_batch(lm, x, methods, spec, layers, channels, batch_size)
            for m in methods:
                maps[m].append(res[m])
            tgts.append(t)
            prbs.append(p)
    finally:
        module.train(was_training)
        for p, flag in zip(module.parameters(), grad_flags):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
    targets = torch.cat(tgts).cpu().tolist()
    probs = torch.cat(prbs).cpu().tolist()
    scores = [[ClassScore(int(k), lm.class_names[k] if k < len(lm.class_names) else f"class {k}", float(pr))
               for k, pr in zip(row_t, row_p)] for row_t, row_p in zip(targets, probs)]
    out = Explanations()
    for m in methods:
        out[m] = Explanation(
            method=m, layers=list(layers) if m in cm.CAM_METHODS else ["input"],
            heatmaps=torch.cat(maps[m]), targets=scores, images=inputs.names, config=lm.config,
            sizes=inputs.sizes, sources=inputs.sources,
            inputs=inputs.batch if inputs.sizes is None else None, model_name=lm.name)
    return out.first if len(methods) == 1 else out


__all__ = ["Explanation", "Explanations", "METHODS", "check_layers", "default_layer", "explain",
           "grid_image", "parse_methods", "resolve_targets", "scale_maps"]
