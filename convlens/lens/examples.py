"""Dataset examples: the real images that excite a channel most, with its map overlaid.

One batched pass over the images (decoded in a small thread pool, the forward
stopped at the layer); a running top-N per channel is kept on the device, so a
large folder never has to fit in memory.  Unreadable files are skipped and
listed in ``skipped``.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from convlens.models import wrap_module
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    >>> lm = wrap_module(net, input_size=(1, 12, 12), mean=(0.0,), std=(1.0,))
    >>> imgs = [torch.full((12, 12), v).numpy() for v in (0.1, 0.9, 0.5)]
    >>> ex = dataset_examples(lm, "0", [0], imgs, n=2)
    >>> ex.scores.shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConvlensError, DataError, LayerError, SpecError
from ..images import list_images
from ..models import LensModel, load_model
from ..models.lensmodel import image_name
from ..models.run import Run
from ..probe import Probe
from ..render.colors import colorize
from ..render.files import OutDir, Saved, safe_stem
from ..render.grid import cell_for, grid
from ..view import View
from .journey import parse_channels


@dataclass(eq=False)
class Examples(View):
    """The top-N images per channel.

    Attributes:
        layer: the layer's module path.
        channels: the channel indices (``K``).
        names: the names of the images read, in order.
        index: ``(K, n)`` positions in ``names``.
        scores: ``(K, n)`` channel means, best first.
        images: ``(K, n, C, H, W)`` uint8 model inputs (what the model saw).
        maps: ``(K, n, h, w)`` the channel's map on each.
        skipped: the images that could not be read.
    """

    layer: str
    channels: list[int]
    names: list[str]
    index: torch.Tensor
    scores: torch.Tensor
    images: torch.Tensor
    maps: torch.Tensor
    skipped: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.scores.shape[1])

    def top(self, channel: int) -> list[tuple[str, float]]:
        """``[(image name, activation), ...]`` best first for one channel."""
        k = self.channels.index(channel)
        return [(self.names[int(i)], float(s)) for i, s in zip(self.index[k], self.scores[k])]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "images_scanned": len(self.names), "skipped": list(self.skipped),
                "channels": [{"channel": c, "examples": [{"image": name, "activation": a} for name, a in self.top(c)]}
                             for c in self.channels]}

    def overlay(self, k: int, j: int, alpha: float = 0.45, cmap: str = "inferno"):
        """Example ``j`` of channel row ``k`` with the channel's map over it (PIL RGB).

        The map is scaled from 0 to the row's largest value, so brighter means more.
        """
        img = self.images[k, j].float() / 255
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        h, w = img.shape[1:]
        m = F.interpolate(self.maps[k, j][None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        top = float(self.maps[k].max())
        heat = torch.from_numpy(colorize(m.clamp_min(0), 0.0, top if top > 0 else 1.0, cmap)).float() / 255
        out = (1 - alpha) * img.permute(1, 2, 0) + alpha * heat
        return Image.fromarray((out * 255).round().clamp(0, 255).to(torch.uint8).numpy(), "RGB")

    def figure(self, tile: int = 150) -> Image.Image:
        """One row per channel: its top images with the map overlaid (PIL); small images
        enlarged by a whole factor (crisp pixels) to about ``tile``, each captioned with its
        name and activation."""
        K, n = self.scores.shape
        cell = cell_for(self.images.shape[-2:], tile)
        rows = [[self.overlay(k, j) for j in range(n)] for k in range(K)]
        caps = [[f"{Path(self.names[int(self.index[k, j])]).name}\n{float(self.scores[k, j]):.3g}"
                 for j in range(n)] for k in range(K)]
        h, w = self.images.shape[-2:]
        return grid(rows, row_titles=[f"ch {c}" for c in self.channels], col_titles=caps,
                    cell=(max(cell[0], 90), cell[1]), pad=6, font_size=11,
                    title=f"dataset examples: {self.layer}, top {n} of {len(self.names)} images per channel",
                    subtitle=f"the channel's map over each {w}x{h} input (inferno: 0 to the row's largest value)")

    def strip(self, k: int) -> Image.Image:
        """Channel row ``k``'s examples side by side (the overlays, 4 pixels apart)."""
        row = [self.overlay(k, j) for j in range(self.n)]
        out = Image.new("RGB", (sum(r.width for r in row) + 4 * (len(row) - 1), max(r.height for r in row)), "white")
        x = 0
        for r in row:
            out.paste(r, (x, 0))
            x += r.width + 4
        return out

    def save(self, out_dir: str | os.PathLike, **_opts: Any) -> Saved:
        """Write one PNG per channel (``examples_<layer>_chNNNN.png``, role ``channel``), all channels
        (``examples_<layer>.png``, role ``grid``) and ``examples_<layer>.json`` (role ``json``: the
        channels with their image paths); one record per channel."""
        out = OutDir(out_dir)
        stem = f"examples_{safe_stem(self.layer, 'input')}"
        d = self.to_dict()
        for k, c in enumerate(self.channels):
            p = out.png("channel", f"{stem}_ch{c:04d}.png", self.strip(k))
            d["channels"][k]["image"] = str(p)
            out.record(layer=self.layer, **d["channels"][k])
        out.png("grid", f"{stem}.png", self.figure())
        out.json("json", f"{stem}.json", d)
        return out.saved()


def _sources(images: Any) -> tuple[list[Any], list[str]]:
    if isinstance(images, (str, os.PathLike)) and (Path(images) / "config.json").is_file():
        return _run_images(Path(images))
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    items = list(images)
    if items and all(isinstance(i, (str, os.PathLike)) for i in items):
        paths = [str(p) for p in list_images([str(i) for i in items])]
        return paths, paths
    return items, [image_name(s, i) for i, s in enumerate(items)]


def _run_images(path: Path) -> tuple[list[Any], list[str]]:
    """A training run's own images (its data source re-read, every split), named by their ids."""
    ds, _split = Run.load(path, weights=False).dataset()
    arrays = [a.numpy() for a in ds.images]  # uint8 (C, H, W); load_image takes them as they are
    return arrays, [f"{path.name}:{i}" for i in ds.ids]


def dataset_examples(model: Any, layer: str, channels: str | int | Sequence[int] | None = None,
                     images: Any = None, *, n: int = 6, batch_size: int = 32) -> Examples:
    """The ``n`` images of a data set that excite each channel most (the mean of its map).

    Real images complement :func:`~convlens.lens.featurevis.visualize`: they show what a channel
    responds to in the pictures the model meets. One batched pass, the forward stopped at the
    layer, a running top-``n`` per channel, so a large folder never has to fit in memory.

    Args:
        model: a ``LensModel`` or anything :func:`~convlens.models.load_model` takes.
        layer: the module path of a layer with a spatial map (``convlens layers`` lists them).
        channels: the channels (``"0-7"``, ``"3,5"``, an int or a list; default: the first 8).
        images: a folder (searched recursively), image paths, in-memory images, or a training
            run's directory (its data source's images).
        n: the images kept per channel.
        batch_size: images per forward pass.

    Returns:
        Examples: a view of the best images per channel (as the model saw them), their scores and
            the channel's map on each; unreadable files are skipped and listed.

    Raises:
        DataError: no ``images`` given, none found, or none readable.
        SpecError: ``n`` below 1, or malformed or out-of-range channels.
        LayerError: an unknown layer, or one without a spatial map.

    Examples:
        >>> from convlens import load_model                                   # doctest: +SKIP
        >>> dataset_examples(load_model(), "blocks.4", "0-7", "photos/").save("ex/")  # doctest: +SKIP
    """
    lm = model if isinstance(model, LensModel) else load_model(model)
    if images is None:
        raise DataError("images: give a folder or image files to search", param="images")
    if n < 1:
        raise SpecError(f"n must be at least 1 (got {n})", param="n")
    lm.get_layer(layer)  # unknown layer: clear error with suggestions
    shape = lm.layers()[layer].output_shape
    if not shape or len(shape) != 3:
        raise LayerError(f"layer {layer!r} has no spatial map (output {shape}); dataset examples need a conv-like "
                         "layer", param="layer")
    chans = parse_channels(channels if not isinstance(channels, int) else [channels], shape[0], layer=layer, default=8)
    sources, names = _sources(images)
    if not sources:
        raise DataError(f"images: no images found in {images}", param="images")
    transform, dev = lm.config.transform, lm.device
    cidx = torch.tensor(chans, device=dev)
    K = len(chans)
    best_s = best_i = best_img = best_map = None
    kept_names: list[str] = []
    skipped: list[str] = []

    def load(src):
        try:
            return transform(lm.load(src))
        except (ConvlensError, OSError, ValueError):
            return None

    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool, torch.no_grad(), Probe(lm.module, [layer], stop=True) as probe:
        for start in range(0, len(sources), batch_size):
            chunk = list(pool.map(load, sources[start:start + batch_size]))
            ok = [t for t in chunk if t is not None]
            for j, t in enumerate(chunk):
                (kept_names.append(names[start + j]) if t is not None else skipped.append(names[start + j]))
            if not ok:
                continue
            x = torch.stack(ok).to(dev)
            base = len(kept_names) - len(ok)
            probe.run(x)  # stops at the layer: nothing after it is computed
            maps = probe.activations[layer][:, cidx].float()  # (B, K, h, w)
            scores = maps.mean((-2, -1)).T  # (K, B)
            pix = (lm.config.denormalize(x) * 255).round().to(torch.uint8)  # (B, C, H, W)
            ids = torch.arange(base, base + len(ok), device=dev).expand(K, -1)
            cand_img = pix[None].expand(K, *pix.shape)
            cand_map = maps.transpose(0, 1)
            if best_s is not None:
                scores = torch.cat([best_s, scores], 1)
                ids = torch.cat([best_i, ids], 1)
                cand_img = torch.cat([best_img, cand_img], 1)
                cand_map = torch.cat([best_map, cand_map], 1)
            top = scores.topk(min(n, scores.shape[1]), dim=1)
            sel = top.indices
            best_s, best_i = top.values, ids.gather(1, sel)
            ar = torch.arange(K, device=dev)[:, None]
            best_img, best_map = cand_img[ar, sel], cand_map[ar, sel]
    if best_s is None:
        raise DataError(f"images: none of the {len(sources)} images could be read", param="images")
    return Examples(layer=layer, channels=chans, names=kept_names, index=best_i.cpu(), scores=best_s.cpu(),
                    images=best_img.cpu(), maps=best_map.cpu(), skipped=skipped)
