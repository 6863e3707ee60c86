"""Routes of the views that look inside the model: the journey, the kernels lab, featurevis."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConvlensError, LayerError, SpecError, closest
from ..kernels import apply_kernel
from ..lens.featurevis import visualize
from ..lens.filters import filters
from ..lens.journey import journey
from .payloads import channel_payload, featurevis_payload, journey_payload, kernels_payload
from .state import Explorer, StoredImage, explorer

router = APIRouter()
Ctx = Annotated[Explorer, Depends(explorer)]


# -- journey -------------------------------------------------------------------------------

async def _journey(ctx: Explorer, model_id: str, stored: StoredImage) -> Any:
    """The journey of an image through every stage layer, computed once per (model, image)."""
    key = (model_id, stored.id)
    hit = ctx.journeys.get(key)
    if hit is not None:
        return hit
    j = await ctx.queue.run(lambda: journey(ctx.models.get(model_id), [stored.image], channels="all"))
    ctx.journeys.put(key, j)
    return j


def _stage(j: Any, layer: str) -> str:
    if layer not in j.layers:
        raise LayerError(f"layer {layer!r}: not a journey stage{closest(layer, j.layers)}", param="layer")
    return layer


@router.get("/api/journey", tags=["journey"])
async def journey_view(ctx: Ctx, image: Annotated[str, Query(max_length=200)],
                       model: Annotated[str | None, Query(max_length=300)] = None,
                       layer: Annotated[str | None, Query(max_length=300)] = None,
                       max_channels: int = Query(48, ge=1, le=512),
                       grid: bool = False) -> dict[str, Any]:
    """The journey of an image: the stage layers and the channel grid of one of them."""
    stored = ctx.images.get(image)
    j = await _journey(ctx, ctx.models.check(model), stored)
    name = _stage(j, layer or j.layers[0])
    return await ctx.queue.run(journey_payload, j, name, max_channels, grid)


@router.get("/api/journey/channel", tags=["journey"])
async def journey_channel(ctx: Ctx, image: Annotated[str, Query(max_length=200)],
                          layer: Annotated[str, Query(max_length=300)],
                          channel: int = Query(..., ge=0, le=1_000_000),
                          model: Annotated[str | None, Query(max_length=300)] = None,
                          size: int = Query(320, ge=32, le=1024)) -> dict[str, Any]:
    """One channel of a journey layer, enlarged, with its value range."""
    stored = ctx.images.get(image)
    j = await _journey(ctx, ctx.models.check(model), stored)
    _stage(j, layer)
    chans = list(j.channels[layer])
    if channel not in chans:
        raise SpecError(f"channel {channel}: layer {layer!r} has channels 0-{max(chans)}", param="channel")
    values = j.maps[layer][0, chans.index(channel)]
    return await ctx.queue.run(channel_payload, j, layer, channel, values, size)


# -- kernels lab ---------------------------------------------------------------------------

#: the largest side the kernels lab's picture may grow to here by padding (``size`` plus the zero
#: border of every repeat): one RGB float32 stage of it is 12 MiB, 16 stages about 200 MiB
MAX_LAB_SIDE = 1024


class KernelRequest(BaseModel):
    """The kernels lab: a kernel (name or matrix text) applied to an image by id.  The bounds are the
    web's (the page offers less); the library checks its own too (``convlens.options``)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field("sample:chelsea", max_length=200, description="image id: sample:NAME or upload:HEX")
    kernel: str = Field("vertical-edge", max_length=20_000,
                        description="a kernel name or a matrix like '1,0,-1;1,0,-1;1,0,-1'")
    color: str = Field("gray", max_length=20, description="gray or rgb")
    stride: int = Field(1, ge=1, le=64)
    padding: str = Field("valid", max_length=5, pattern=r"^\s*(valid|same|[0-9]{1,3})\s*$",
                         description="valid, same or a number of zero pixels (0-256) on each side")
    repeat: int = Field(1, ge=1, le=16, description="convolutions in a row")
    pool: str | None = Field(None, max_length=20, description="none, max or avg")
    pool_size: int = Field(2, ge=1, le=64)
    size: int = Field(192, ge=8, le=512, description="long side the image is resized to first")

    @model_validator(mode="after")
    def _bounded(self) -> "KernelRequest":
        pad = self.padding.strip()
        if pad.isdigit():
            if int(pad) > 256:
                raise ValueError(f"padding: {pad} is more than 256 zero pixels")
            grown = self.size + 2 * int(pad) * self.repeat
            if grown > MAX_LAB_SIDE:
                raise ValueError(f"padding: {pad} pixels {self.repeat} times grows the image to {grown} px; "
                                 f"at most {MAX_LAB_SIDE} here (less padding, fewer repeats or a smaller size)")
        return self


@router.post("/api/kernels", tags=["kernels"])
async def kernels(ctx: Ctx, req: KernelRequest) -> dict[str, Any]:
    """Apply a kernel (name or matrix) with stride, padding, repeats and pooling; shapes and pictures."""
    stored = ctx.images.get(req.image)

    def work() -> dict[str, Any]:
        img = stored.image
        if max(img.size) != req.size:
            scale = req.size / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        padding: Any = int(req.padding) if req.padding.strip().isdigit() else req.padding.strip()
        r = apply_kernel(img, req.kernel, color=req.color, stride=req.stride, padding=padding,
                         repeat=req.repeat, pool=req.pool or None, pool_size=req.pool_size)
        return kernels_payload(r, stored)
    return await ctx.queue.run(work)


# -- feature visualization -----------------------------------------------------------------

@router.get("/api/featurevis", tags=["featurevis"])
async def featurevis(ctx: Ctx, layer: Annotated[str, Query(max_length=300)],
                     model: Annotated[str | None, Query(max_length=300)] = None,
                     channels: Annotated[str, Query(max_length=200)] = "0-7",
                     steps: int = Query(64, ge=1, le=512),
                     size: int = Query(128, ge=32, le=512)) -> dict[str, Any]:
    """The layer's filters (when it is a conv layer) and activation-maximization images."""
    def work() -> dict[str, Any]:
        m = ctx.models.get(model)
        try:
            grid, why = filters(m, layer), None
        except ConvlensError as exc:  # not a conv layer: the page says so beside the images
            grid, why = None, str(exc)
        return featurevis_payload(layer, grid, why, visualize(m, layer, channels, steps=steps, size=size))
    return await ctx.queue.run(work)
