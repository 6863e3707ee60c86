"""The journey of an image through a CNN: feature maps, layer by layer.

One forward pass with a :class:`~convlens.lens.probe.Probe` on the chosen
layers (default: each conv and pooling stage) captures their feature maps for
every image of the batch; only the chosen channels are kept.

>>> import convlens as cl                                         # doctest: +SKIP
>>> j = cl.journey(cl.load_model(), "cat.jpg", channels="0-15")
>>> j.save("journey/")            # one grid PNG per layer, the input beside it
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from ..errors import SpecError
from ..models import LensModel, load_model
from ..models.lensmodel import _as_list, image_name
from .probe import Probe, resolve_modules

DEFAULT_CHANNELS = 32
DEFAULT_COMPARE_CHANNELS = 8


def parse_channels(spec: str | Sequence[int] | None, n_channels: int, *, layer: str = "",
                   default: int = DEFAULT_CHANNELS, strict: bool = True) -> list[int]:
    """Channel indices from ``"0-31"``, ``"0,4,8-11"``, ``"all"``, a list, or None (the first ``default``).

    ``strict``: a channel beyond the layer's count is an error; otherwise it is dropped.

    >>> parse_channels("0-3,8", 16)
    [0, 1, 2, 3, 8]
    """
    where = f" for layer {layer!r}" if layer else ""
    if spec is None:
        return list(range(min(default, n_channels)))
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("all", "*", ""):
            return list(range(n_channels))
        idx: list[int] = []
        for part in text.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)\s*(?:-|:|\.\.)\s*(\d+)", part)
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise SpecError(f"--channels {spec!r}: range {part!r} runs backwards")
                idx.extend(range(a, b + 1))
            elif part.isdigit():
                idx.append(int(part))
            else:
                raise SpecError(f"--channels {spec!r}: {part!r} is not a channel number or range like 0-31")
    else:
        idx = [int(i) for i in spec]
    if any(i < 0 for i in idx):
        raise SpecError("--channels: negative channel numbers are not allowed")
    out = list(dict.fromkeys(idx))  # keep order, drop repeats
    bad = [i for i in out if i >= n_channels]
    if bad and strict:
        raise SpecError(f"--channels: channel {bad[0]} is out of range{where} (it has {n_channels} channels, 0-{n_channels - 1})")
    out = [i for i in out if i < n_channels]
    if not out:
        raise SpecError(f"--channels {spec!r}: no channel in range{where} (it has {n_channels} channels)")
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "layer"


@dataclass
class Journey:
    """Feature maps of several layers for a batch of images."""

    model_name: str
    image_names: list[str]
    inputs: torch.Tensor  # (N, C, H, W) in [0, 1], what the model saw
    layers: list[str]
    types: dict[str, str]
    shapes: dict[str, tuple[int, ...]]  # full (C, h, w) per layer
    channels: dict[str, list[int]]
    maps: dict[str, torch.Tensor]  # (N, K, h, w) float32 on the CPU, the chosen channels
    cmap: str = "viridis"
    files: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Journey({self.model_name!r}, images={len(self.image_names)}, layers={self.layers})"

    # -- pictures -------------------------------------------------------------
    def input_image(self, i: int = 0) -> Image.Image:
        from ..render.grid import to_pil_image

        return to_pil_image(self.inputs[i])

    def _subtitle(self, layer: str) -> str:
        c, h, w = self.shapes[layer]
        chans = self.channels[layer]
        return f"{self.types[layer]} · output {c}x{h}x{w} · channels {_span(chans)} of {c}"

    def grid(self, layer: str, image: int = 0) -> Image.Image:
        """All chosen channels of one layer for one image, tiled, with the input beside it."""
        from ..render.colors import robust_range
        from ..render.grid import colorbar, tile_maps, titled

        maps = self.maps[layer][image]
        vmin, vmax = robust_range(maps)
        body = tile_maps(maps, [f"ch {c}" for c in self.channels[layer]], vmin, vmax, cmap=self.cmap)
        left = self.input_image(image)
        left.thumbnail((224, 224))
        title = f"{layer}  —  {Path(self.image_names[image]).name}"
        return titled(body, title, self._subtitle(layer), footer=colorbar(min(body.width, 360), vmin, vmax, self.cmap),
                      left=left, left_caption="input (model's view)")

    def compare(self, layer: str, channels: Sequence[int] | None = None) -> Image.Image:
        """Several images side by side through the same layer and channels (one colour scale)."""
        from ..render.colors import robust_range
        from ..render.grid import colorbar, image_rows, titled

        chans = list(self.channels[layer])
        pick = list(range(min(len(chans), DEFAULT_COMPARE_CHANNELS))) if channels is None else [
            chans.index(c) for c in channels if c in chans]
        maps = self.maps[layer][:, pick]
        vmin, vmax = robust_range(maps)
        rows = [(self.input_image(i), maps[i]) for i in range(len(self.image_names))]
        body = image_rows(rows, [f"ch {chans[p]}" for p in pick], [Path(n).name for n in self.image_names],
                          vmin, vmax, cmap=self.cmap)
        return titled(body, f"{layer}  —  {len(self.image_names)} images, same channels",
                      self._subtitle(layer), footer=colorbar(min(body.width, 360), vmin, vmax, self.cmap))

    def figure(self, layer: str) -> Image.Image:
        """The picture for a layer: its grid for one image, a comparison for several."""
        return self.grid(layer) if len(self.image_names) == 1 else self.compare(layer)

    def _repr_png_(self) -> bytes:
        from ..render.files import png_bytes

        return png_bytes(self.figure(self.layers[0]))

    # -- output ---------------------------------------------------------------
    def save(self, out_dir: str | Path) -> list[dict[str, Any]]:
        """One PNG per layer (plus the model's view of each input) under ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files: list[dict[str, Any]] = []
        for i, layer in enumerate(self.layers):
            path = out / f"{i:02d}_{_safe(layer)}.png"
            _atomic_png(self.figure(layer), path)
            files.append({**self._layer_dict(layer), "grid": str(path)})
        for i, name in enumerate(self.image_names):
            _atomic_png(self.input_image(i), out / f"input_{i:02d}.png")
        self.files = files
        return files

    def _layer_dict(self, layer: str) -> dict[str, Any]:
        return {"layer": layer, "type": self.types[layer], "output_shape": list(self.shapes[layer]),
                "channels": self.channels[layer]}

    def to_dict(self) -> dict[str, Any]:
        layers = self.files or [self._layer_dict(n) for n in self.layers]
        return {"model": self.model_name, "images": self.image_names, "layers": layers}


def _span(chans: Sequence[int]) -> str:
    if chans and list(chans) == list(range(chans[0], chans[0] + len(chans))):
        return f"{chans[0]}-{chans[-1]}" if len(chans) > 1 else str(chans[0])
    return ",".join(map(str, chans[:12])) + ("…" if len(chans) > 12 else "")


def _atomic_png(img: Image.Image, path: Path) -> None:
    from ..render.files import save_png

    save_png(img, path)


def journey(model: Any, images: Any, layers: str | Sequence[str] | None = None,
            channels: str | Sequence[int] | None = None, *, cmap: str = "viridis") -> Journey:
    """Feature maps of ``layers`` (default: each conv/pool stage) for ``images``, from one forward pass.

    ``images``: paths, PIL images, arrays, or an already preprocessed batch tensor.
    ``channels``: ``"0-31"``, ``"all"``, a list; default the first 32 (8 when comparing images).
    """
    lm = model if isinstance(model, LensModel) else load_model(model)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        batch, names = images.to(lm.device), [f"image {i}" for i in range(images.shape[0])]
    else:
        items = _as_list(images)
        batch, names = lm.preprocess(items), [image_name(s, i) for i, s in enumerate(items)]
    table = lm.layers()
    if layers is None:
        chosen = lm.stage_layers()
    else:
        chosen = [s.strip() for s in layers.split(",")] if isinstance(layers, str) else list(layers)
        chosen = [c for c in chosen if c]
        if not chosen:
            raise SpecError(f"--layers {layers!r}: no layer names given (list them with `convlens layers`)")
    resolve_modules(lm.module, chosen)  # clear error for unknown names
    info = {name: table[name] for name in chosen}
    for name, row in info.items():
        if not row.is_spatial:
            raise SpecError(f"layer {name!r} has no feature maps to show (output shape {row.output_shape}); "
                            "pick a conv or pooling layer")
    default = DEFAULT_CHANNELS if len(names) == 1 else DEFAULT_COMPARE_CHANNELS
    strict = len(chosen) == 1
    chan = {n: parse_channels(channels, info[n].output_shape[0], layer=n, default=default, strict=strict)
            for n in chosen}
    index = {n: torch.tensor(c, device=lm.device) for n, c in chan.items()}
    whole = {n for n, c in chan.items() if c == list(range(info[n].output_shape[0]))}
    mutated = table.inplace_mutated

    def keep(name: str, t: torch.Tensor) -> torch.Tensor:
        if name in whole:  # all channels: keep by reference unless later code writes into it
            return t.clone() if name in mutated else t
        return t.index_select(1, index[name])  # a copy: safe from later in-place ops

    with Probe(lm.module, chosen, transform=keep) as probe, torch.inference_mode():
        lm.module(batch)
    maps = {n: probe.activations[n].float().cpu() for n in chosen}
    return Journey(
        model_name=lm.name, image_names=names, inputs=lm.config.denormalize(batch.float()).cpu(),
        layers=chosen, types={n: info[n].type for n in chosen},
        shapes={n: tuple(info[n].output_shape) for n in chosen}, channels=chan, maps=maps, cmap=cmap,
    )
