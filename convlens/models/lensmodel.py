"""``LensModel``: a classifier with everything needed to look inside it.

A module in eval mode, the preprocessing it expects, its class names and its
layer table, with ``predict`` and ``preprocess`` on top.  Everything else in
convlens (journey, CAMs, feature visualisation, reports) takes a LensModel.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from PIL import Image
from torch import nn

from ..errors import ImageError, LayerError, SpecError, closest
from ..images import ImageSource, load_image, load_many
from ..render.files import atomic_write_json
from ..view import html_table
from .layers import LayerTable, build_layer_table, stage_layers
from .layout import to_channels_last
from .preprocess import Preprocess


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "probability": self.probability}


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, best first."""

    image: str
    predictions: list[ClassScore]

    @property
    def top(self) -> ClassScore:
        return self.predictions[0]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "predictions": [p.to_dict() for p in self.predictions]}

    def __str__(self) -> str:
        return f"{self.image}: " + ", ".join(f"{p.label} ({p.probability:.1%})" for p in self.predictions)

    def _repr_html_(self) -> str:  # a notebook shows the top-k as a table
        return html_table(["rank", "class", "index", "probability"],
                          [[k + 1, p.label, p.index, f"{p.probability:.1%}"] for k, p in enumerate(self.predictions)],
                          caption=self.image)


def image_name(src: Any, i: int) -> str:
    """A display name for an image source (its path, else ``image i``)."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    name = getattr(src, "filename", None)  # PIL images opened from files
    return str(name) if name else f"image {i}"


class LensModel:
    """A classifier with its preprocessing, class names and layer table.

    The module's convolution weights are stored channels-last in place (same values,
    1.25-1.3x faster convolutions on CPU, see :mod:`convlens.models.layout`); pass
    ``channels_last=False`` to leave a module's layout as it is.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> lm = LensModel(net, Preprocess((1, 16, 16), (0.5,), (0.5,), crop_pct=1.0), ["no", "yes"])
    >>> lm.layers()["0"].output_shape
    (4, 14, 14)
    """

    def __init__(self, module: nn.Module, preprocess: Preprocess, class_names: Sequence[str],
                 name: str = "model", source: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", channels_last: bool = True, task: str = "classification"):
        self.module = module.eval()
        self._task = task
        self._view: SegmentationScores | None = None
        self.config = preprocess
        self.class_names = list(class_names)
        self.name = name
        self.source = dict(source or {"kind": "module"})
        self.device = torch.device(device)
        self.module.to(self.device)
        if channels_last:
            # convolutions run faster on NHWC weights (see models/layout.py); values are unchanged
            to_channels_last(self.module)
        self._layers: LayerTable | None = None

    # -- basics ---------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"LensModel({self.name!r}, input={self.config.input_size}, "
                f"classes={len(self.class_names)}, device={self.device})")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: str | torch.device) -> "LensModel":
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, classes)`` (for a segmentation model, its mask logits averaged over the
        pixels: see :class:`SegmentationScores`)."""
        return self.classifier(x.to(self.device))

    @property
    def task(self) -> str:
        """``"classification"``, or ``"segmentation"`` for a model whose output is a mask dict
        (``{"out": (N, K, H, W)}``: ``module`` returns it as it is, for mask targets)."""
        return self._task

    @property
    def classifier(self) -> nn.Module:
        """The classification view: ``module`` itself, or for a segmentation model a
        :class:`SegmentationScores` around it (per-image class scores; the same layer names)."""
        if self._task != "segmentation":
            return self.module
        if self._view is None or self._view.net is not self.module:
            self._view = SegmentationScores(self.module)
        return self._view

    def raw(self, x: torch.Tensor) -> Any:
        """The model's own output for ``x`` (a segmentation model's dict with ``"out"`` mask logits
        ``(N, K, H, W)``; for a classifier the class scores)."""
        return self.module(x.to(self.device))

    # -- inputs ---------------------------------------------------------------
    def load(self, source: ImageSource):
        """Read one image in the mode this model needs (``L`` or ``RGB``)."""
        return load_image(source, mode=self.config.image_mode)

    def preprocess(self, images: ImageSource | Iterable[ImageSource], workers: int | None = None) -> torch.Tensor:
        """Images (paths, PIL, arrays, bytes) to a normalised batch ``(N, C, H, W)`` on the device.

        Decoding and resizing run in a small thread pool (Pillow releases the GIL).
        """
        items = as_list(images)
        transform = self.config.transform

        def one(src):
            return transform(self.load(src))

        if workers is None:  # threads pay off from three images on; four are enough on a CPU box
            workers = min(4, os.cpu_count() or 1) if len(items) > 2 else 1
        return torch.stack(load_many(items, one, workers=workers)).to(self.device)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros((batch, *self.config.input_size), device=self.device)

    # -- predictions ------------------------------------------------------------
    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.classifier(batch.to(self.device)).float().softmax(dim=-1)

    def predict(self, images: ImageSource | Iterable[ImageSource], top_k: int = 5,
                batch_size: int | None = None) -> list[Prediction]:
        """Top-k labels and probabilities for each image, best first, batched.

        ``batch_size`` None picks :meth:`default_batch_size` (8 on a CPU, 32 on a GPU).
        """
        items = as_list(images)
        if top_k < 1:
            raise SpecError(f"top_k must be at least 1 (got {top_k})", param="top_k")
        if batch_size is not None and batch_size < 1:
            raise SpecError(f"batch_size must be at least 1 (got {batch_size})", param="batch_size")
        k = min(top_k, self.num_classes)
        batch_size = batch_size or self.default_batch_size()
        out: list[Prediction] = []
        starts = list(range(0, len(items), batch_size))
        # decode the next chunk while the model runs on this one (Pillow releases the GIL)
        with ThreadPoolExecutor(1) as prefetch:
            pending = prefetch.submit(self.preprocess, items[:batch_size])
            for n, start in enumerate(starts):
                chunk = items[start:start + batch_size]
                batch = pending.result()
                if n + 1 < len(starts):
                    pending = prefetch.submit(self.preprocess, items[starts[n + 1]:starts[n + 1] + batch_size])
                out.extend(self.top_k(self.probabilities(batch), chunk, start, k))
        return out

    def top_k(self, probs: torch.Tensor, chunk: Sequence[Any], start: int, k: int) -> list[Prediction]:
        """One :class:`Prediction` per row of ``probs`` ``(n, classes)``; ``chunk`` are the images'
        sources (for their names), ``start`` the index of the first in the whole request."""
        values, indices = probs.topk(k, dim=-1)
        values, indices = values.cpu().tolist(), indices.cpu().tolist()
        return [Prediction(image_name(src, start + j), [
            ClassScore(i, self.class_names[i], float(v)) for v, i in zip(values[j], indices[j])])
            for j, src in enumerate(chunk)]

    def default_batch_size(self) -> int:
        """Images per forward pass: 8 on a CPU, 32 on an accelerator. With glibc's default allocator
        larger batches of 224 px images ran slower on a CPU (EfficientNet-Lite0 on 2 cores: 32 images
        in 0.84 s at batch 8, 1.32 s at batch 32): their activations were page-faulted in afresh on
        every call. Where glibc keeps freed memory (``convlens/_alloc.py``) the batch
        matters little there (32 images: 272/301/280 ms at batch 8/16/32 with ``OMP_WAIT_POLICY``
        unset, 407/384/377 ms with PASSIVE, measured 2026-12-07); 8 keeps the memory lowest."""
        return 8 if self.device.type == "cpu" else 32

    # -- layers -----------------------------------------------------------------
    def layers(self) -> LayerTable:
        """The layer table (computed once by a real forward at the input size)."""
        if self._layers is None:
            self._layers = build_layer_table(self.module, self.example_input())
        return self._layers

    def summary(self) -> str:
        return str(self.layers())

    def get_layer(self, name: str) -> nn.Module:
        """The submodule at a module path from :meth:`layers`; clear error otherwise."""
        modules = dict(self.module.named_modules())
        if name in modules and name:
            return modules[name]
        raise LayerError(f"unknown layer {name!r} in {self.name}{closest(name, [n for n in modules if n])}"
                         " (list them with `convlens layers`)", param="layer")

    def stage_layers(self) -> list[str]:
        """The default journey layers: each conv and pooling stage."""
        return stage_layers(self.layers())

    # -- saving -----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save weights as ``PATH.safetensors`` plus ``PATH.json`` (arch, preprocessing, classes).

        ``load_model(PATH.safetensors)`` reads it back when the source is rebuildable
        (built-in, timm: or torchvision: names).
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix == ".safetensors":
            path = path.with_suffix("")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
        weights = path.with_suffix(".safetensors")
        tmp = weights.with_suffix(".safetensors.tmp")
        save_file(state, str(tmp))
        meta = {"format": "convlens-checkpoint", "version": 1, "name": self.name, "source": self.source,
                "preprocess": self.config.to_dict(), "class_names": self.class_names}
        atomic_write_json(path.with_suffix(".json"), meta)
        os.replace(tmp, weights)
        return weights


def as_list(images: Any) -> list[Any]:
    """One image source or many as a list: a path, bytes, a PIL image or a single array/tensor is
    one item; any other iterable is many. ImageError when it is empty."""
    if isinstance(images, (str, os.PathLike, bytes, Image.Image)) or not isinstance(images, Iterable):
        return [images]
    if hasattr(images, "shape") and not isinstance(images, (list, tuple)):
        return [images]  # a single array / tensor
    items = list(images)
    if not items:
        raise ImageError("no images given")
    return items


def twin(module: nn.Module) -> nn.Module:
    """A twin of ``module`` that convlens can switch to eval mode without touching the original.

    Every submodule is copied shallowly: the twin has its own tree, its own ``training`` flags and
    hook tables, and shares the very same parameters and buffers (no memory, and weights the user
    trains further are seen at once). So ``load_model(net)`` and every verb leave ``net``'s mode,
    ``requires_grad`` flags and memory format as they found them, where TorchCAM switches and
    restores per call. A change to the architecture itself (a new head) needs ``load_model`` again.
    Modules that cannot be copied (TorchScript) are returned as they are.
    """
    if isinstance(module, torch.jit.ScriptModule):
        return module
    made: dict[int, nn.Module] = {}

    def copy_one(m: nn.Module) -> nn.Module:
        if id(m) in made:  # a module used twice stays one module
            return made[id(m)]
        c = copy.copy(m)
        made[id(m)] = c
        for attr in ("_parameters", "_buffers", "_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            value = m.__dict__.get(attr)
            if isinstance(value, dict):
                c.__dict__[attr] = type(value)(value)
        c.__dict__["_modules"] = {k: (copy_one(v) if v is not None else None) for k, v in m._modules.items()}
        return c

    try:
        return copy_one(module)
    except Exception:  # a module that refuses copying is used as it is
        return module


class SegmentationScores(nn.Module):
    """The classification view of a segmentation model (torchvision FCN, DeepLabV3, LRASPP: output
    a dict whose ``"out"`` holds mask logits ``(N, K, H, W)``): per-image class scores ``(N, K)``,
    the mask logits averaged over the pixels, so every verb reads it as a classifier.

    The view shares the model's submodules, parameters and buffers (layer names are the model's
    own: ``backbone.layer4``); ``raw_output`` keeps the last forward's raw output (graph included),
    for targets that explain a class over a mask.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.__dict__["net"] = net  # not a child: the view's children are the model's own
        for attr in ("_modules", "_parameters", "_buffers"):
            self.__dict__[attr] = net.__dict__[attr]
        self.__dict__["raw_output"] = None

    def train(self, mode: bool = True) -> "SegmentationScores":
        self.net.train(mode)
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.__dict__["raw_output"] = out
        return out["out"].mean(dim=(-2, -1))


def is_segmentation(out: Any) -> bool:
    """Whether a model's output is a segmentation dict (``{"out": (N, K, H, W), ...}``)."""
    return isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor) and out["out"].dim() == 4
