"""The journey of an image through a CNN: feature maps, layer by layer.

One forward pass with a :class:`~convlens.probe.Probe` on the chosen
layers (default: each conv and pooling stage) captures their feature maps for
every image of the batch; only the chosen channels are kept.

>>> import convlens as cl                                         # doctest: +SKIP
>>> j = cl.journey(cl.load_model(), "cat.jpg", channels="0-15")
>>> j.figure("blocks.2")          # a PIL image: that layer's channels, the input beside it
>>> j.figure()                    # every layer in one picture (what a notebook shows)
>>> cl.journey(model, ["a.jpg", "b.jpg"]).across()   # images x layers in one picture
>>> j.save("journey/")            # one grid PNG per layer, the input beside it, and overview.png
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from ..errors import SpecError
from ..models import LensModel, load_model
from ..models.lensmodel import as_list, image_name
from ..probe import Probe, resolve_modules
from ..render.colors import check_cmap, robust_range
from ..render.files import OutDir, Saved, safe_stem
from ..render.grid import (
    cell_for,
    colorbar,
    fit_image,
    grid,
    image_rows,
    map_tiles,
    tile_maps,
    titled,
    to_pil_image,
)
from ..view import View

DEFAULT_CHANNELS = 32
DEFAULT_COMPARE_CHANNELS = 8
#: channels per layer in the one-picture overview of a journey
OVERVIEW_CHANNELS = 8


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
                a, b = _channel(m.group(1), spec), _channel(m.group(2), spec)
                if b < a:
                    raise SpecError(f"channels {spec!r}: range {part!r} runs backwards", param="channels")
                # channels past the layer's count only matter once (the first is reported or all dropped):
                # "0-99999999" must not build a list of 10**8 numbers
                idx.extend(range(a, min(b, max(a, n_channels)) + 1))
            elif part.isdecimal():  # (not isdigit: '²' is a digit that int() refuses)
                idx.append(_channel(part, spec))
            else:
                raise SpecError(f"channels {spec!r}: {part!r} is not a channel number or range like 0-31",
                                param="channels")
    else:
        idx = [int(i) for i in spec]
    if any(i < 0 for i in idx):
        raise SpecError("channels: negative channel numbers are not allowed", param="channels")
    out = list(dict.fromkeys(idx))  # keep order, drop repeats
    bad = [i for i in out if i >= n_channels]
    if bad and strict:
        raise SpecError(f"channels: channel {bad[0]} is out of range{where} "
                        f"(it has {n_channels} of them, 0-{n_channels - 1})", param="channels")
    out = [i for i in out if i < n_channels]
    if not out:
        raise SpecError(f"channels {spec!r}: none in range{where} (it has {n_channels} of them)",
                        param="channels")
    return out


def _channel(digits: str, spec: str) -> int:
    if len(digits) > 4000:  # int() refuses over 4300 digits
        raise SpecError(f"channels {spec[:40]!r}...: channel number {digits[:12]}... is far too large",
                        param="channels")
    return int(digits)


def layer_stem(name: str) -> str:
    """A layer path as a file-name stem: ``blocks.1`` -> ``blocks_1``."""
    return safe_stem(name.replace(".", "_"), "layer")


@dataclass
class Journey(View):
    """Feature maps of several layers for a batch of images (a :class:`~convlens.view.View`)."""

    model_name: str
    image_names: list[str]
    inputs: torch.Tensor  # (N, C, H, W) in [0, 1], what the model saw
    layers: list[str]
    types: dict[str, str]
    shapes: dict[str, tuple[int, ...]]  # full (C, h, w) per layer
    channels: dict[str, list[int]]
    maps: dict[str, torch.Tensor]  # (N, K, h, w) float32 on the CPU, the chosen channels
    cmap: str = "viridis"

    def __repr__(self) -> str:
        return f"Journey({self.model_name!r}, images={len(self.image_names)}, layers={self.layers})"

    # -- pictures -------------------------------------------------------------
    def input_image(self, i: int = 0) -> Image.Image:
        """What the model saw of image ``i`` (de-normalised), as a PIL image."""
        return to_pil_image(self.inputs[i])

    def _subtitle(self, layer: str) -> str:
        c, h, w = self.shapes[layer]
        chans = self.channels[layer]
        return f"{self.types[layer]} · output {c}x{h}x{w} · channels {_span(chans)} of {c}"

    def grid(self, layer: str, image: int = 0) -> Image.Image:
        """All chosen channels of one layer for one image, tiled, with the input beside it."""
        maps = self.maps[layer][image]
        vmin, vmax = robust_range(maps)
        body = tile_maps(maps, [f"ch {c}" for c in self.channels[layer]], vmin, vmax, cmap=self.cmap)
        left = fit_image(self.input_image(image), 224, 224)  # small inputs enlarged, crisp
        title = f"{layer}  —  {Path(self.image_names[image]).name}"
        return titled(body, title, self._subtitle(layer), footer=colorbar(min(body.width, 360), vmin, vmax, self.cmap),
                      left=left, left_caption="input (model's view)")

    def compare(self, layer: str, channels: Sequence[int] | None = None) -> Image.Image:
        """Several images side by side through the same layer and channels (one colour scale)."""
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

    def _input_cell(self) -> tuple[int, int]:
        return cell_for(self.inputs.shape[-2:], 112, 112)

    def overview(self, image: int = 0, channels: int = OVERVIEW_CHANNELS) -> Image.Image:
        """Every layer of one image in one picture: a row per layer (its name, type and output
        shape on the left) with its first ``channels`` kept channels, each layer on its own
        colour scale, the input above; small maps enlarged with crisp pixels."""
        self._check_image(image)
        cell = self._input_cell()
        rows, titles, caps = [[self.input_image(image)]], ["input\nthe model's view"], [[""]]
        for layer in self.layers:
            maps = self.maps[layer][image][:channels]
            lo, hi = robust_range(maps)
            c, h, w = self.shapes[layer]
            rows.append(map_tiles(maps, lo, hi, cmap=self.cmap, tile=max(cell)))
            titles.append(f"{layer}\n{self.types[layer]} {c}x{h}x{w}")
            caps.append([f"ch {ch}" for ch in self.channels[layer][:channels]])
        body = grid(rows, row_titles=titles, col_titles=caps, cell=cell, pad=4, font_size=11,
                    title=f"journey of {Path(self.image_names[image]).name} through {self.model_name}",
                    subtitle=f"{len(self.layers)} layers, first {channels} channels each; "
                             f"each layer on its own colour scale ({self.cmap}: low to high)")
        return body

    def across(self, channel: int | str | None = None) -> Image.Image:
        """Images (rows) x layers (columns) in one picture: the input, then one channel map
        per layer: the same channel for every image of a column, the kept channel that varies
        most across its map (the mean over the images of its spatial standard deviation: a map
        with structure, not a flat bias) (``channel="mean"``: the mean of the kept
        channels; an int: that channel where it was kept); one colour scale per column."""
        cell = self._input_cell()
        cols, heads = [[self.input_image(i) for i in range(len(self.image_names))]], ["input\nthe model's view"]
        for layer in self.layers:
            maps = self.maps[layer]  # (N, K, h, w)
            c, h, w = self.shapes[layer]
            if channel == "mean":
                pick, what = maps.mean(1), "mean of kept channels"
            else:
                kept = self.channels[layer]
                if channel is None:  # the most varied: a map with structure, not a flat bias
                    k = int(maps.flatten(2).std(-1).mean(0).argmax()) if h * w > 1 else \
                        int(maps.mean((0, 2, 3)).argmax())
                elif int(channel) in kept:
                    k = kept.index(int(channel))
                else:
                    raise SpecError(f"channel {channel} was not kept for layer {layer!r} (kept: {_span(kept)})",
                                    param="channel")
                pick, what = maps[:, k], f"ch {kept[k]} of {c}"
            lo, hi = robust_range(pick)
            cols.append(map_tiles(pick, lo, hi, cmap=self.cmap, tile=max(cell)))
            heads.append(f"{layer}\n{what} · {h}x{w}")
        rows = [[col[i] for col in cols] for i in range(len(self.image_names))]
        names = [Path(n).name for n in self.image_names]
        return grid(rows, row_titles=names, col_titles=heads, cell=(max(cell[0], 118), cell[1]), pad=4,
                    font_size=11, title=f"{len(names)} images through {self.model_name}, layer by layer",
                    subtitle="one channel per layer (the one with the most structure over these images); "
                             "one colour scale per column")

    def _check_image(self, image: int) -> None:
        if not -len(self.image_names) <= int(image) < len(self.image_names):
            raise SpecError(f"image {image} is out of range (this journey has {len(self.image_names)})",
                            param="image")

    def figure(self, layer: str | None = None, image: int | None = None, **_opts: Any) -> Image.Image:
        """The picture of a layer: the grid of one image (``image``, or the only one), or a
        comparison of all images when there are several.  Without ``layer`` (what a notebook
        shows): every layer in one picture, :meth:`overview` of one image or :meth:`across`
        (images x layers) for several."""
        if layer is None and len(self.layers) > 1:
            if image is not None or len(self.image_names) == 1:
                return self.overview(0 if image is None else image)
            return self.across()
        layer = self.layers[0] if layer is None else layer
        if layer not in self.maps:
            raise SpecError(f"layer {layer!r} is not in this journey (it has {', '.join(self.layers)})",
                            param="layer")
        if image is not None or len(self.image_names) == 1:
            return self.grid(layer, 0 if image is None else image)
        return self.compare(layer)

    # -- output ---------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike, **_opts: Any) -> Saved:
        """One grid PNG per layer (role ``grid``, ``NN_layer.png``), the model's view of each
        input (role ``input``, ``input_NN.png``) and, with several layers, every layer in one
        picture (role ``overview``, ``overview.png``: :meth:`figure`) under ``out_dir``, each written atomically;
        one record per layer (its :meth:`to_dict` entry plus ``grid``, the PNG's path)."""
        out = OutDir(out_dir)
        for i, layer in enumerate(self.layers):
            path = out.png("grid", f"{i:02d}_{layer_stem(layer)}.png", self.figure(layer))
            out.record(**self._layer_dict(layer), grid=str(path))
        for i in range(len(self.image_names)):
            out.png("input", f"input_{i:02d}.png", self.input_image(i))
        if len(self.layers) > 1:  # every layer in one picture (images x layers for several)
            out.png("overview", "overview.png", self.figure())
        return out.saved()

    def _layer_dict(self, layer: str) -> dict[str, Any]:
        return {"layer": layer, "type": self.types[layer], "output_shape": list(self.shapes[layer]),
                "channels": self.channels[layer]}

    def to_dict(self) -> dict[str, Any]:
        """Model, image names and each layer's type, output shape and channels (pure)."""
        return {"model": self.model_name, "images": list(self.image_names),
                "layers": [self._layer_dict(n) for n in self.layers]}


def _span(chans: Sequence[int]) -> str:
    if chans and list(chans) == list(range(chans[0], chans[0] + len(chans))):
        return f"{chans[0]}-{chans[-1]}" if len(chans) > 1 else str(chans[0])
    return ",".join(map(str, chans[:12])) + ("…" if len(chans) > 12 else "")


def journey(model: Any, images: Any, layers: str | Sequence[str] | None = None,
            channels: str | Sequence[int] | None = None, *, cmap: str = "viridis") -> Journey:
    """Feature maps of ``layers`` (default: each conv/pool stage) for ``images``, from one forward pass.

    ``images``: paths, PIL images, arrays, or an already preprocessed batch tensor.
    ``channels``: ``"0-31"``, ``"all"``, a list; default the first 32 (8 when comparing images).
    """
    check_cmap(cmap)
    lm = model if isinstance(model, LensModel) else load_model(model)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        batch, names = images.to(lm.device), [f"image {i}" for i in range(images.shape[0])]
    else:
        items = as_list(images)
        batch, names = lm.preprocess(items), [image_name(s, i) for i, s in enumerate(items)]
    table = lm.layers()
    if layers is None:
        chosen = lm.stage_layers()
    else:
        chosen = [s.strip() for s in layers.split(",")] if isinstance(layers, str) else list(layers)
        chosen = [c for c in chosen if c]
        if not chosen:
            raise SpecError(f"layers {layers!r}: no layer names given (list them with `convlens layers`)",
                            param="layers")
    resolve_modules(lm.module, chosen)  # clear error for unknown names
    info = {name: table[name] for name in chosen}
    for name, row in info.items():
        if not row.is_spatial:
            raise SpecError(f"layer {name!r} has no feature maps to show (output shape {row.output_shape}); "
                            "pick a conv or pooling layer", param="layers")
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

    # inference_mode, as a plain prediction runs (the maps are copied where the layer table saw
    # an in-place change, so no version counter is needed)
    # (``run`` also sees an in-place ReLU after a layer: DenseNet's ``features`` as the next layer sees them)
    with Probe(lm.module, chosen, transform=keep) as probe, torch.inference_mode():
        probe.run(batch)
    maps = {n: probe.activations[n].float().cpu() for n in chosen}
    return Journey(
        model_name=lm.name, image_names=names, inputs=lm.config.denormalize(batch.float()).cpu(),
        layers=chosen, types={n: info[n].type for n in chosen},
        shapes={n: tuple(info[n].output_shape) for n in chosen}, channels=chan, maps=maps, cmap=cmap,
    )
