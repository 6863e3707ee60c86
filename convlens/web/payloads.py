"""What the routes answer: a result's ``to_dict()`` plus its pictures as data URLs.

Nothing here computes a result: each function takes what a public verb returned
(an :class:`~convlens.lens.cam.Explanation`, a Journey, a KernelResult, an Evaluation...)
and encodes it for the page.  Pictures are drawn by the result (``figure()``, ``overlay()``)
or by :mod:`convlens.render`; :mod:`.imaging` only encodes them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..render.colors import robust_range
from ..render.grid import map_image, map_tiles, stage_image, to_pil_image
from ..render.overlay import NO_EVIDENCE
from . import imaging


def cam_payloads(m: Any, ex: Any, items: list[Any], overlay: bool = False) -> list[dict[str, Any]]:
    """The page's CAM payload for each stored image of an Explanation (first target, first method):
    the heatmap as a palette PNG on the original picture, transparent where the model's crop did
    not look, the raw heatmap on the input grid, the target explained and the peak."""
    out = []
    for i, stored in enumerate(items):
        heat = ex.heatmap(i, 0, size="original")
        mask = m.config.crop_mask(stored.image.width, stored.image.height)
        payload = {
            "image": stored.id,
            "method": ex.method,
            "layer": ex.layer or None,
            "target": ex.targets[i][0].to_dict(),
            "heatmap_png": imaging.data_url(imaging.heat_image(heat, mask=mask)),
            "raw_png": imaging.data_url(imaging.heat_image(ex.heatmap(i, 0, size="input"))),
            "size": [stored.image.width, stored.image.height],
            "peak": list(ex.peak(i, 0)),
            # an all-zero map is said in words (HTML text: readable whatever the picture's size)
            "empty": ex.empty(i, 0),
            "note": NO_EVIDENCE if ex.empty(i, 0) else None,
        }
        if overlay:
            payload["overlay_png"] = imaging.data_url(ex.overlay(i, 0))
        out.append(payload)
    return out


#: the side of one channel tile of the journey view, in pixels
TILE = 96


def journey_payload(j: Any, name: str, max_channels: int, grid: bool = False) -> dict[str, Any]:
    """One journey layer: its shape, and a small PNG tile per channel on one colour scale."""
    full = list(j.channels[name])
    chans = full[:max_channels]
    maps = j.maps[name][0, :len(chans)]
    lo, hi = robust_range(maps, 0.005, 0.995)
    out = {
        "layers": list(j.layers),
        "types": {k: j.types.get(k) for k in j.layers},
        "shapes": {k: list(j.shapes[k]) for k in j.layers},
        "layer": name,
        "index": j.layers.index(name),
        "shape": list(j.shapes[name]),
        "channels": chans,
        "n_channels": len(full),
        "range": [lo, hi],
        "tiles": [{"channel": c, "png": imaging.data_url(tile)}
                  for c, tile in zip(chans, map_tiles(maps, lo, hi, cmap=j.cmap, tile=TILE))],
    }
    if grid:
        out["grid_png"] = imaging.data_url(j.figure(layer=name))
    return out


def channel_payload(j: Any, layer: str, channel: int, values: torch.Tensor, size: int) -> dict[str, Any]:
    """One channel of a journey layer, enlarged to ``size``, with its value range."""
    lo, hi = float(values.min()), float(values.max())
    img = map_image(values, size, cmap="viridis", signed=False)
    return {"layer": layer, "channel": channel, "shape": list(values.shape), "min": lo, "max": hi,
            "png": imaging.data_url(img)}


def kernels_payload(r: Any, stored: Any) -> dict[str, Any]:
    """A kernels-lab result: its ``to_dict()``, the image it ran on and a picture per stage."""
    out = r.to_dict()
    out["image"] = stored.id
    out["input_png"] = imaging.data_url(stage_image(r.input, 0))
    out["stage_pngs"] = [imaging.data_url(stage_image(s.tensor, 0)) for s in r.stages]
    return out


def featurevis_payload(layer: str, grid: Any, filters_error: str | None, vis: Any) -> dict[str, Any]:
    """A layer's filter grid (or why it has none) and its activation-maximization images."""
    out: dict[str, Any] = {"layer": layer}
    if grid is not None:
        out["filters_png"] = imaging.data_url(grid.figure())
        out["filters"] = grid.to_dict()
    if filters_error is not None:
        out["filters_error"] = filters_error
    out["vis_png"] = imaging.data_url(vis.figure())
    out["vis"] = vis.to_dict()
    return out


#: the long side of a top-loss thumbnail, in pixels
THUMB = 128


def top_losses_payload(ev: Any) -> dict[str, Any]:
    """An Evaluation's worst test mistakes, each with its picture and Grad-CAM overlays of the
    true and the predicted class."""
    items = []
    for i, row in enumerate(ev.top_losses):
        item = {key: row[key] for key in ("id", "true", "predicted", "loss", "p_predicted", "p_true") if key in row}
        item["id"] = str(item.get("id", "")).replace("\\", "/").rsplit("/", 1)[-1]
        if ev.top_images is not None:
            item["image_png"] = imaging.data_url(imaging.upscale(to_pil_image(ev.top_images[i].float() / 255), THUMB))
        if ev.top_cams is not None:
            true_cam, pred_cam = ev.top_cams[i]
            item["cam_true_png"] = imaging.data_url(imaging.upscale(true_cam, THUMB))
            item["cam_png"] = imaging.data_url(imaging.upscale(pred_cam, THUMB))
        items.append(item)
    return {"items": items, "accuracy": ev.accuracy, "method": "gradcam" if ev.top_cams is not None else None}
