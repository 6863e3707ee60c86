"""Routes of the page itself, what the server offers, layer tables and images by id."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response

from .. import __version__
from ..kernels import kernel_names
from ..lens.cam import METHODS, default_layer
from ..lens.cam.layers import cam_layers
from . import imaging
from .forms import multipart_only, read_upload
from .page import render_page
from .routes_explain import has_cam_layer
from .state import Explorer, explorer

STATIC = Path(__file__).resolve().parent / "static"

router = APIRouter()
Ctx = Annotated[Explorer, Depends(explorer)]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse(render_page(title="convlens explorer", version=__version__))


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> FileResponse:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/api/info", tags=["info"])
def info(ctx: Ctx) -> dict[str, Any]:
    """What this server offers: models, samples, CAM methods, kernels, limits, and whether
    training runs are served (``capabilities.runs``: the server was given ``--runs``)."""
    return {
        "version": __version__,
        "models": ctx.models.ids,
        "default_model": ctx.models.default,
        "samples": ctx.images.samples(),
        "capabilities": {"runs": ctx.runs is not None},
        "cam_methods": list(METHODS),
        "kernels": kernel_names(),
        "max_upload_bytes": ctx.max_upload,
    }


@router.get("/api/layers", tags=["model"])
async def layers(ctx: Ctx, model: Annotated[str | None, Query(max_length=300)] = None,
                 spatial: bool = False) -> dict[str, Any]:
    """The layer table of a model (name, type, output shape ``(C, H, W)``, parameters, ``layout``:
    how the output reads as a grid, ``grid``: its ``[H, W]``) and its stage layers. Each row's
    ``cam`` says whether a CAM can be computed there (a grid larger than 1x1: channels-first,
    channels-last or patch tokens); ``spatial=true`` answers those rows only."""
    def work() -> dict[str, Any]:
        m = ctx.models.get(model)
        mappable = set(cam_layers(m))
        rows = [{**r, "cam": r["name"] in mappable} for r in m.layers().to_list()]
        if spatial:
            rows = [r for r in rows if r["cam"]]
        return {"model": model or ctx.models.default, "layers": rows, "stages": m.stage_layers(),
                "default_cam_layer": default_layer(m) if has_cam_layer(m) else None}
    return await ctx.queue.run(work)


@router.get("/api/samples", tags=["images"])
def list_samples(ctx: Ctx) -> list[dict[str, str]]:
    """The bundled sample photos, by id."""
    return ctx.images.samples()


@router.get("/api/images/{image_id}", tags=["images"], response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def get_image(ctx: Ctx, image_id: str, size: int | None = Query(None, ge=16, le=2048)) -> Response:
    """A sample or uploaded image as PNG (``size``: long side of a thumbnail)."""
    stored = ctx.images.get(image_id)

    def work() -> bytes:
        img = stored.image
        if size is not None and max(img.size) > size:
            img = img.copy()
            img.thumbnail((size, size))
        return imaging.png_bytes(img)
    return Response(await ctx.queue.run_io(work), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.post("/api/images", tags=["images"], dependencies=[Depends(multipart_only)])
async def upload_image(ctx: Ctx, file: Annotated[UploadFile | None, File(description="an image file")] = None
                       ) -> dict[str, Any]:
    """Upload an image (multipart field ``file``); answers its id for the other endpoints."""
    data, filename = await read_upload(file)
    if data is None:
        raise HTTPException(422, "file: missing (send the image as the multipart field 'file')")
    stored = await ctx.queue.run_io(ctx.images.add, data, filename)
    return {"id": stored.id, "name": stored.name, "width": stored.image.width,
            "height": stored.image.height}

