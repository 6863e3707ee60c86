"""Activation maximization: what pattern does a channel, a neuron or a class look for?

Many targets are optimized together, one per batch item, in one forward and one
backward per step (Lucent renders one objective at a time).  The forward stops
at the target layer (nothing after it is computed) and only the gradient with
respect to the image is computed (no weight gradients), so a step costs a
fraction of a full training step.

Objectives (per batch item): ``"channel"`` (mean of the channel's map),
``"neuron"`` (one spatial position of the map, the centre by default),
``"class"`` (a logit); ``negative=True`` minimizes instead.  Parameterizations:
``"fft"`` (Lucid's decorrelated Fourier image with colour decorrelation, the
default: it gives recognisable images) and ``"pixel"``.  Robustness
transforms (gray padding, jitter, scale, rotation, drawn per item and applied
with one ``grid_sample``) and regularizers (total variation, L2).

Everything follows ``model.config``: channels (1 or 3), input size, mean/std
(so a raw-pixel 1-channel 64x60 run works unchanged).  The images are always
returned at the model's input size, quantized to 8 bits, and the reported
activation is measured on exactly those pixels, without transforms: feeding a
saved PNG (pixels / 255, normalised with the model's mean/std, no resizing) to
the model reproduces it.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from convlens.models import wrap_module
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> lm = wrap_module(net, input_size=(1, 60, 64), mean=(0.0,), std=(1 / 255,))
    >>> res = visualize(lm, "0", channels="0-3", steps=20)
    >>> tuple(res.images.shape), len(res.activations)
    ((4, 1, 60, 64), 4)
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import LayerError, SpecError, closest
from ..models import LensModel, load_model, resolve_label
from ..models.layout import channels_last
from ..probe import Probe, first_tensor
from ..render.files import OutDir, Saved, safe_stem
from ..render.grid import cell_for, grid
from ..view import View
from .filters import conv_layers
from .journey import parse_channels

OBJECTIVES = ("channel", "neuron", "class")
PARAMS = ("fft", "pixel")

#: Lucid's colour correlation (square root of the ImageNet colour covariance, by SVD).
_COLOR_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                [0.27, 0.00, -0.05],
                                [0.27, -0.09, 0.03]])
_COLOR_NORMALIZED = _COLOR_SVD_SQRT / _COLOR_SVD_SQRT.norm(dim=0).max()


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Transforms:
    """Robustness transforms, in pixels of a 224-pixel image (scaled to the actual size).

    Lucent's ``standard_transforms``: pad 12 (grey), jitter 8, scale 0.9-1.1,
    rotate ±10 degrees, jitter 2.  Here they are drawn independently per batch
    item and fused into one affine resampling per step.
    """

    pad: float = 12.0
    jitter: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return {"pad": self.pad, "jitter": self.jitter, "scale": list(self.scale), "rotate": self.rotate}


NO_TRANSFORMS = Transforms(pad=0.0, jitter=0.0, scale=(1.0, 1.0), rotate=0.0)


def parse_size(size: int | Sequence[int] | str | None, model_hw: tuple[int, int]) -> tuple[int, int]:
    """The parameterization's (H, W): the model's own, ``224``, an ``(H, W)`` tuple such as ``(60, 64)``,
    or text ``"WxH"`` (width x height, as every ``--size`` and summary writes sizes: ``"64x60"`` is 64
    wide and 60 tall)."""
    if size is None:
        return model_hw
    try:
        if isinstance(size, str):
            text = size.lower().replace(" ", "").replace("×", "x").replace(",", "x")
            parts = [int(p) for p in text.split("x")][::-1]  # WxH -> (H, W)
        elif isinstance(size, int):
            parts = [size]
        else:
            parts = [int(p) for p in size]
    except (ValueError, TypeError, OverflowError):  # "60xa", 8.5 (not a sequence), [inf, 8]
        raise SpecError(f"size {size!r}: expected a number like 224 or WxH like 64x60", param="size") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8 or max(parts) > 2048:
        raise SpecError(f"size {size!r}: each side must be between 8 and 2048 pixels", param="size")
    return parts[0], parts[1]


def parse_targets(spec: str | int | Sequence[int | str] | None) -> list[str] | None:
    """``"1,207"`` / ``[1, "goldfish"]`` / ``3`` -> a list of items (None stays None)."""
    if spec is None:
        return None
    if isinstance(spec, (int, np.integer)):
        return [str(int(spec))]
    if isinstance(spec, str):
        return [s.strip() for s in spec.split(",") if s.strip()]
    return [str(s) for s in spec]


# --------------------------------------------------------------------------- result


@dataclass(eq=False)
class FeatureVis(View):
    """Optimized images and the activation each one reached.

    Attributes:
        images: ``(N, C, H, W)`` in [0, 1] at the model's input size (8-bit levels, CPU).
        activations: ``(N,)`` the objective's value (channel mean, neuron, or logit; not negated)
            on exactly those pixels.
        targets: the channel or class index of each image.
        objective: ``"channel"``, ``"neuron"`` or ``"class"``.
        layer: the layer of the channel and neuron objectives (``None`` for classes).
        labels: class names for the class objective.
        settings: the optimization's settings, as saved in ``featurevis.json``.
        history: ``(steps, N)`` the objective during the optimization (with transforms).
    """

    images: torch.Tensor
    activations: torch.Tensor
    targets: list[int]
    objective: str
    layer: str | None
    negative: bool = False
    neuron: tuple[int, int] | None = None
    labels: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    history: torch.Tensor | None = None  # (steps, N) objective during optimization (with transforms)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def key(self) -> str:
        return "class" if self.objective == "class" else "channel"

    def caption(self, i: int) -> str:
        sign = "-" if self.negative else ""
        if self.objective == "class":
            name = self.labels[i].split(",")[0] if i < len(self.labels) else ""
            return f"{sign}class {self.targets[i]} {name}".strip()
        what = f"{sign}ch {self.targets[i]}"
        if self.objective == "neuron" and self.neuron is not None:
            what += f" @{self.neuron[0]},{self.neuron[1]}"
        return what

    def file_stem(self, i: int) -> str:
        sign = "neg_" if self.negative else ""
        if self.objective == "class":
            return f"{sign}class_{self.targets[i]:04d}"
        kind = "neuron" if self.objective == "neuron" else "channel"
        return f"{safe_stem(self.layer or 'model', 'input')}_{sign}{kind}_{self.targets[i]:04d}"

    def to_list(self, files: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """One entry per image: layer, channel (or class), image path (``files[i]``, e.g. from
        :meth:`save`'s ``Saved["image"]``; else None), activation."""
        out = []
        for i, t in enumerate(self.targets):
            d: dict[str, Any] = {"layer": self.layer if self.objective != "class" else None, self.key: t,
                                 "image": str(files[i]) if files is not None and i < len(files) else None,
                                 "activation": float(self.activations[i])}
            if self.objective == "class" and i < len(self.labels):
                d["label"] = self.labels[i]
            out.append(d)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "layer": self.layer, "negative": self.negative,
                "neuron": list(self.neuron) if self.neuron else None, "settings": self.settings,
                "results": self.to_list()}

    def pil(self, i: int) -> Image.Image:
        """Image ``i`` as a PIL image (``L`` for 1-channel models, ``RGB`` otherwise)."""
        arr = (self.images[i].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(arr[..., 0], "L") if arr.shape[-1] == 1 else Image.fromarray(arr, "RGB")

    def figure(self, tile: int = 160, cols: int | None = None) -> Image.Image:
        """All images in one labelled grid (PIL): small images (28x28, 64x60) enlarged by a
        whole factor with nearest neighbours to about ``tile`` pixels, larger ones shrunk to it;
        each captioned with its target and the activation it reaches."""
        n = len(self)
        cols = cols or (n if n <= 8 else min(8, math.ceil(math.sqrt(n * 1.5))))
        cell = cell_for(self.images.shape[-2:], tile)
        pics = [self.pil(i).convert("RGB") for i in range(n)]
        caps = [f"{self.caption(i)}\nact {float(self.activations[i]):.3g}" for i in range(n)]
        rows = [pics[i:i + cols] for i in range(0, n, cols)]
        titles = [caps[i:i + cols] for i in range(0, n, cols)]
        what = "class logits" if self.objective == "class" else f"{self.layer}, {self.objective} objective"
        h, w = self.images.shape[-2:]
        k = cell[0] // w if cell[0] >= w else 0
        sub = f"{n} images of {w}x{h}" + (f", shown {k}x with square pixels" if k > 1 else "")
        return grid(rows, col_titles=titles, cell=(max(cell[0], 96), cell[1]), pad=6, font_size=11,
                    title=f"activation maximization: {what}", subtitle=sub)

    def save(self, out_dir: str | os.PathLike, **_opts: Any) -> Saved:
        """Write one PNG per image (model input size; role ``image``), the grid (``grid.png`` for
        classes, ``grid_<layer>.png``; role ``grid``) and ``featurevis.json`` (role ``json``: the
        results with their image paths).  The records are :meth:`to_list` with the paths."""
        out = OutDir(out_dir)
        files = [out.png("image", f"{self.file_stem(i)}.png", self.pil(i)) for i in range(len(self))]
        grid_name = "grid.png" if self.objective == "class" else f"grid_{safe_stem(self.layer or 'model', 'input')}.png"
        out.png("grid", grid_name, self.figure())
        rows = self.to_list(files)
        out.json("json", "featurevis.json", dict(self.to_dict(), results=rows))
        for r in rows:
            out.record(**r)
        return out.saved()


# --------------------------------------------------------------------------- pieces


def fft_freqs(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Spatial frequency magnitude of each ``rfft2`` coefficient, ``(h, w // 2 + 1)``."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class _Parameterization:
    """An image batch as a function of free parameters (Lucid's ``param.image``)."""

    def __init__(self, kind: str, n: int, c: int, h: int, w: int, out_hw: tuple[int, int], *,
                 decorrelate: bool, generator: torch.Generator, device: torch.device, sd: float = 0.01):
        self.kind, self.c, self.h, self.w, self.out_hw = kind, c, h, w, out_hw
        self.decorrelate = decorrelate and c == 3
        if kind == "fft":
            freqs = fft_freqs(h, w)
            self.scale = (1.0 / freqs.clamp_min(1.0 / max(h, w)))[None, None].to(device)
            init = torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * sd
        else:
            init = torch.randn(n, c, h, w, generator=generator) * sd
        self.param = init.to(device).requires_grad_(True)
        self.color = _COLOR_NORMALIZED.T.to(device) if self.decorrelate else None

    def __call__(self) -> torch.Tensor:
        if self.kind == "fft":
            spec = torch.view_as_complex(self.param) * self.scale
            x = torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho") / 4.0  # Lucid's magic 4
        else:
            x = self.param
        if self.color is not None:
            x = torch.einsum("nchw,cd->ndhw", x, self.color)
        x = torch.sigmoid(x)
        if (self.h, self.w) != self.out_hw:
            x = F.interpolate(x, size=self.out_hw, mode="bilinear", align_corners=False)
        return x


def random_affine(x: torch.Tensor, t: Transforms, generator: torch.Generator) -> torch.Tensor:
    """Grey-pad, jitter, scale and rotate each image of ``x`` (N, C, H, W) independently.

    One ``affine_grid`` + ``grid_sample`` for the whole batch; outside the
    image is mid-grey (0.5), like Lucent's constant padding.
    """
    n, _, h, w = x.shape
    ref = max(h, w) / 224.0
    pad, jit = t.pad * ref, t.jitter * ref
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator).to(dev) * (hi - lo) + lo

    s = u(*t.scale)
    ang = u(-t.rotate, t.rotate) * (math.pi / 180.0)
    k = (max(h, w) + 2 * pad) / max(h, w) / s  # visible window, in input widths
    tx, ty = u(-jit, jit) * 2 / w, u(-jit, jit) * 2 / h
    cos, sin = torch.cos(ang) * k, torch.sin(ang) * k
    theta = torch.stack([torch.stack([cos, -sin * h / w, tx], 1),
                         torch.stack([sin * w / h, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image: ``(N,)``."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3)))


def _probe(net: nn.Module, layer: str | None) -> contextlib.AbstractContextManager:
    """A probe that stops the forward at ``layer`` (nothing after it is computed), or nothing
    for the class objective (the logits)."""
    return Probe(net, [layer], detach=False, stop=True) if layer is not None else contextlib.nullcontext()


def _forward(probe: Probe | None, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The probed layer's output (the logits without a probe)."""
    if probe is None:
        return first_tensor(net(x))  # type: ignore[return-value]
    probe.run(x)  # a layer the forward never reaches -> LayerError
    return probe.activations[probe.layers[0]]


def _objective_fn(objective: str, idx: torch.Tensor, neuron: tuple[int, int] | None
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    ar = torch.arange(idx.numel(), device=idx.device)

    def f(act: torch.Tensor) -> torch.Tensor:
        sel = act[ar, idx]  # (N, ...) the target channel/logit of each item
        if objective == "neuron" and sel.dim() == 3:
            return sel[:, neuron[0], neuron[1]]
        return sel.flatten(1).mean(1) if sel.dim() > 1 else sel

    return f


# --------------------------------------------------------------------------- main


def check_settings(*, objective: str = "channel", param: str = "fft", steps: Any = 256, lr: Any = 0.05,
                   tv: Any = 0.0, l2: Any = 0.0, size: Any = None, batch_size: int = 16,
                   classes: Any = "") -> None:
    """Validate :func:`visualize`'s settings without a model (a shell calls it before loading one).

    ``classes``: what the class objective will read its classes from (``None`` or empty fails).
    """
    if objective not in OBJECTIVES:
        raise SpecError(f"objective {objective!r}: choose one of {', '.join(OBJECTIVES)}"
                        f"{closest(str(objective), OBJECTIVES)}", param="objective")
    if param not in PARAMS:
        raise SpecError(f"param {param!r}: choose one of {', '.join(PARAMS)}{closest(str(param), PARAMS)}",
                        param="param")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps <= 0:
        raise SpecError(f"steps must be a positive whole number (got {steps!r})", param="steps")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise SpecError(f"lr (the learning rate) must be a positive number (got {lr!r})", param="lr")
    for name, v in (("tv", tv), ("l2", l2)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise SpecError(f"{name} weight must be a number >= 0 (got {v!r})", param=name)
    if batch_size < 1:
        raise SpecError(f"batch_size must be at least 1 (got {batch_size})", param="batch_size")
    if size is not None:
        parse_size(size, (224, 224))
    if objective == "class" and not parse_targets(classes):
        raise SpecError("classes: give class indices or labels for the class objective, e.g. 1,207",
                        param="classes")


def visualize(model: Any, layer: str | None = None, channels: str | int | Sequence[int] | None = None, *,
              objective: str = "channel", classes: str | int | Sequence[int | str] | None = None,
              neuron: tuple[int, int] | None = None, negative: bool = False, param: str = "fft",
              decorrelate: bool | None = None, steps: int = 256, lr: float = 0.05,
              size: int | Sequence[int] | str | None = None, transforms: bool | Transforms = True,
              tv: float = 0.0, l2: float = 0.0, seed: int = 0, batch_size: int = 16,
              progress: Callable[[int, int], None] | None = None) -> FeatureVis:
    """Optimize one image per target (channel, neuron or class) so that it excites the target most.

    The images show what pattern a unit responds to, which a data set's examples mix with
    everything else in the picture. All targets of a batch are optimized together, one per batch
    item; the forward stops at the target layer and only the image's gradient is computed.

    Args:
        model: a ``LensModel`` or anything :func:`~convlens.models.load_model` takes.
        layer: a module path from ``convlens layers``, for the channel and neuron objectives
            (default: the last ``Conv2d``); ignored by the class objective.
        channels: the channels to visualize (``"0-7"``, ``"3,5"``, an int or a list; default: the
            first 8); for the class objective, the classes when ``classes`` is not given.
        objective: ``"channel"`` (the mean of a channel's map), ``"neuron"`` (one position of the
            map) or ``"class"`` (a logit).
        classes: class indices or labels for the class objective (``"1,207"``, ``["cat", 3]``).
        neuron: ``(row, column)`` in the layer's map for the neuron objective (default: its centre).
        negative: minimize instead of maximize (what the unit responds to least).
        param: the image's parameterization, ``"fft"`` (decorrelated Fourier: recognisable images)
            or ``"pixel"``.
        decorrelate: colour decorrelation (default: on for ``fft``, off for ``pixel``).
        steps: optimization steps per target.
        lr: Adam's learning rate.
        size: the parameterization's resolution (default: the model's input size); the image is
            resized to the model's input size before the model sees it.
        transforms: robustness transforms (jitter, scale, rotation): ``True`` for Lucent-like
            defaults, ``False`` for none, or a :class:`Transforms`; without them images tend to
            high-frequency noise.
        tv: the weight of a total-variation regularizer (smoother images).
        l2: the weight of an L2 regularizer towards mid-grey.
        seed: seeds the initial image and the transforms (deterministic on CPU).
        batch_size: targets optimized together.
        progress: called as ``progress(done, total)`` after each step.

    Returns:
        FeatureVis: a view of the images at the model's input size, quantized to 8 bits, and the
            activation each reaches on exactly those pixels (a saved PNG reproduces it).

    Raises:
        SpecError: an unknown objective or parameterization, a setting out of bounds, malformed
            or out-of-range channels, no classes for the class objective, or a neuron outside the
            layer's map.
        LayerError: an unknown layer, a layer without a tensor output, a layer without a spatial
            map for the neuron objective, or no ``Conv2d`` to default to.
        TargetError: a class that the model does not have.

    Examples:
        >>> from convlens import load_model                         # doctest: +SKIP
        >>> vis = visualize(load_model(), "blocks.4", "0-7", steps=128)  # doctest: +SKIP
        >>> vis.save("vis/")                                         # doctest: +SKIP
    """
    check_settings(objective=objective, param=param, steps=steps, lr=lr, tv=tv, l2=l2, size=size,
                   batch_size=batch_size, classes=classes if classes is not None else channels)
    lm = model if isinstance(model, LensModel) else load_model(model)
    cfg = lm.config
    model_hw = (cfg.height, cfg.width)
    hw = parse_size(size, model_hw)
    tf = Transforms() if transforms is True else \
        (NO_TRANSFORMS if transforms is False or transforms is None else transforms)
    if decorrelate is None:
        decorrelate = param == "fft"

    labels: list[str] = []
    if objective == "class":
        items = parse_targets(classes if classes is not None else channels)
        targets = list(dict.fromkeys(resolve_label(c, lm.class_names) for c in items))
        labels = [lm.class_names[t] for t in targets]
        layer = None
    else:
        if not layer:
            convs = conv_layers(lm)
            if not convs:
                raise LayerError("layer is required: the model has no Conv2d layer to default to"
                                 " (list them with `convlens layers`)", param="layer")
            layer = convs[-1]  # default: the last conv layer (the most "semantic" maps)
        lm.get_layer(layer)  # unknown layer: clear error with suggestions
        info = lm.layers()[layer]
        shape = info.output_shape
        if not shape:
            raise LayerError(f"layer {layer!r} has no tensor output to maximize", param="layer")
        targets = parse_channels(channels if not isinstance(channels, int) else [channels], shape[0],
                                 layer=layer, default=8)
        if objective == "neuron":
            if len(shape) != 3:
                raise LayerError(f"layer {layer!r} has no spatial map (output {tuple(shape)}); use the channel "
                                 "objective", param="layer")
            neuron = tuple(neuron) if neuron is not None else (shape[1] // 2, shape[2] // 2)
            if len(neuron) != 2 or not (0 <= neuron[0] < shape[1] and 0 <= neuron[1] < shape[2]):
                raise SpecError(f"neuron {neuron}: outside layer {layer!r}'s {shape[1]}x{shape[2]} map", param="neuron")
        else:
            neuron = None
        # inputs of other sizes change the map size; the neuron is defined at the model's size
    settings = {"param": param, "decorrelate": bool(decorrelate), "steps": int(steps), "lr": float(lr),
                "size": list(hw), "input_size": list(cfg.input_size), "seed": int(seed),
                "transforms": tf.to_dict(), "tv": float(tv), "l2": float(l2)}

    net = lm.module
    dev = lm.device
    gen = torch.Generator().manual_seed(int(seed))
    sign = -1.0 if negative else 1.0
    images, acts, hist = [], [], []
    total_steps = math.ceil(len(targets) / batch_size) * int(steps)
    with torch.inference_mode(False), _probe(net, layer) as cap, channels_last(net):
        for start in range(0, len(targets), batch_size):
            chunk = targets[start:start + batch_size]
            n = len(chunk)
            idx = torch.tensor(chunk, device=dev)
            f_obj = _objective_fn(objective, idx, neuron)
            par = _Parameterization(param, n, cfg.channels, hw[0], hw[1], model_hw,
                                    decorrelate=bool(decorrelate), generator=gen, device=dev)
            opt = torch.optim.Adam([par.param], lr=lr)
            chunk_hist = torch.empty(int(steps), n)
            use_tf = tf != NO_TRANSFORMS
            for step in range(int(steps)):
                with torch.enable_grad():
                    img = par()
                    x = random_affine(img, tf, gen) if use_tf else img
                    value = f_obj(_forward(cap, net, cfg.normalize(x)))
                    loss = -(sign * value).sum()
                    if tv:
                        loss = loss + tv * total_variation(img).sum()
                    if l2:
                        loss = loss + l2 * ((img - 0.5) ** 2).mean((1, 2, 3)).sum()
                    (grad,) = torch.autograd.grad(loss, [par.param])
                par.param.grad = grad
                opt.step()
                chunk_hist[step] = value.detach().float().cpu()
                if progress is not None:
                    progress((start // batch_size) * int(steps) + step + 1, total_steps)
            with torch.no_grad():
                final = (par().clamp(0, 1) * 255).round() / 255  # exactly the saved 8-bit pixels
                value = f_obj(_forward(cap, net, cfg.normalize(final)))
            images.append(final.detach().float().cpu())
            acts.append(value.detach().float().cpu())
            hist.append(chunk_hist)
    return FeatureVis(images=torch.cat(images), activations=torch.cat(acts), targets=list(targets),
                      objective=objective, layer=layer, negative=bool(negative),
                      neuron=tuple(neuron) if neuron is not None else None, labels=labels,
                      settings=settings, history=torch.cat(hist, dim=1))


def activation_of(model: Any, layer: str | None, images: torch.Tensor, targets: Sequence[int], *,
                  objective: str = "channel", neuron: tuple[int, int] | None = None) -> torch.Tensor:
    """The objective's value for ``images`` ((N, C, H, W) pixels in [0, 1]), target i for image i.

    Used to check that a saved PNG reproduces its activation.
    """
    lm = model if isinstance(model, LensModel) else load_model(model)
    name = layer if objective != "class" else None
    if name is not None:
        lm.get_layer(name)  # unknown layer: clear error with suggestions
    idx = torch.tensor(list(targets), device=lm.device)
    with torch.no_grad(), _probe(lm.module, name) as cap:
        out = _forward(cap, lm.module, lm.config.normalize(images.to(lm.device)))
        return _objective_fn(objective, idx, neuron)(out).float().cpu()
