"""The local web explorer: a FastAPI app over the convlens API.

One page (``/``) with its JS/CSS shipped in the package (no CDN, no inline
script, so the strict Content-Security-Policy below holds) and a JSON API under
``/api/...`` (documented at ``/docs`` and ``/openapi.json``).  Models are loaded
once and cached; model work runs on a worker thread behind a bounded queue
(503 + ``Retry-After`` when full); uploads are size-limited (413) and bad images
answer 4xx with ``{"error": "..."}``.  The client names samples, uploads, models
and runs by id, never a path on the server.

>>> from fastapi.testclient import TestClient                  # doctest: +SKIP
>>> client = TestClient(create_app(models=["effnet-lite0"]))
>>> client.post("/api/predict", files={"file": open("cat.jpg", "rb")}).json()["predictions"][0]
{'index': 282, 'label': 'tiger cat', 'probability': 0.61}
"""

from __future__ import annotations

import csv
from contextlib import asynccontextmanager
from dataclasses import dataclass
import importlib
import json
from pathlib import Path
from typing import Any, Iterable

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import ConvlensError, ImageError, LayerError, SpecError
from ..models.lensmodel import ClassScore, Prediction
from ..render.colors import colorize
from . import imaging
from .state import SAMPLES, LRU, Busy, ImageStore, ModelStore, NotFound, RunStore, WorkQueue

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
RENDER = HERE.parent / "render"

DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024

#: The page's policy: everything from this server, images also as data:/blob: URLs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

#: FastAPI's interactive docs page loads Swagger UI (an inline bootstrap script and
#: assets from a CDN); it alone gets this looser policy.  The API itself needs none.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def has_capability(module: str) -> bool:
    """Whether an optional convlens capability (a module) imports in this tree."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- middleware


class _TooLarge(Exception):
    pass


class LimitBody:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413 JSON.

    Checks ``Content-Length`` first, and counts streamed bytes too (chunked uploads).
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    def _response(self) -> JSONResponse:
        mb = self.limit / (1024 * 1024)
        return JSONResponse({"error": f"upload is too large (limit {mb:g} MB)"}, status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                await self._response()(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._response()(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: CSP and friends on every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "") in ("/docs", "/redoc", "/docs/oauth2-redirect")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"content-security-policy", (DOCS_CSP if docs else CSP).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --------------------------------------------------------------------------- request bodies


class KernelRequest(BaseModel):
    """The kernels lab: a kernel (name or matrix text) applied to an image by id."""

    image: str = Field("sample:chelsea", description="image id: sample:NAME or upload:HEX")
    kernel: str = Field("vertical-edge", description="a kernel name or a matrix like '1,0,-1;1,0,-1;1,0,-1'")
    color: str = "gray"
    stride: int = 1
    padding: str = "valid"
    repeat: int = 1
    pool: str | None = None
    pool_size: int = 2
    size: int = Field(192, ge=8, le=512, description="long side the image is resized to first")


# --------------------------------------------------------------------------- the app


def create_app(models: Iterable[Any] = ("effnet-lite0",), runs_dir: str | Path | None = None, *,
               max_upload: int = DEFAULT_MAX_UPLOAD, queue_size: int = 32, workers: int = 1,
               samples: Iterable[str] = SAMPLES, device: str = "cpu") -> FastAPI:
    """Build the explorer app.

    ``models``: names for :func:`~convlens.models.load_model` or live ``LensModel``
    objects (the first is the default); ``runs_dir``: a folder of training runs
    (each also served as model ``run:NAME``); ``max_upload``: bytes per request
    body (413 beyond); ``queue_size``: model jobs admitted at once (503 beyond).
    """
    runs = RunStore(runs_dir) if runs_dir is not None else None
    model_store = ModelStore(list(models), runs=runs, device=device)
    images = ImageStore(samples)
    queue = WorkQueue(workers=workers, capacity=queue_size)
    journeys = LRU(8)
    cams = LRU(64)
    # (model id, image id) -> the default Grad-CAM of each predicted image, from its predict pass
    fresh_cams = LRU(256)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        queue.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="convlens explorer",
        version=__version__,
        description="See inside convolutional image classifiers: predictions, CAMs, feature maps, "
                    "kernels and training runs. Images are named by id (`sample:NAME` or the "
                    "`upload:HEX` that `POST /api/images` returns), never by a server path.",
    )
    app.state.models = model_store
    app.state.images = images
    app.state.runs = runs
    app.state.queue = queue
    app.state.fresh_cams = fresh_cams
    app.state.max_upload = max_upload
    app.add_middleware(LimitBody, limit=max_upload)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if (RENDER / "static").is_dir():
        app.mount("/render-static", StaticFiles(directory=RENDER / "static"), name="render-static")

    # -- errors: always one JSON line ------------------------------------------------
    @app.exception_handler(NotFound)
    async def _not_found(_r: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(ConvlensError)
    async def _convlens(_r: Request, exc: ConvlensError) -> JSONResponse:
        status = 422 if isinstance(exc, ImageError) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(Busy)
    async def _busy(_r: Request, _exc: Busy) -> JSONResponse:
        return JSONResponse({"error": "the server is busy: too many requests queued, retry shortly"},
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    # -- the page --------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        from .page import render_page

        return HTMLResponse(render_page(title="convlens explorer", version=__version__))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    # -- info ------------------------------------------------------------------------
    @app.get("/api/info", tags=["info"])
    def info() -> dict[str, Any]:
        """What this server offers: models, samples, capabilities, limits."""
        from ..kernels import kernel_names

        cam = has_capability("convlens.lens.cam")
        return {
            "version": __version__,
            "models": model_store.ids,
            "default_model": model_store.default,
            "samples": images.samples(),
            "capabilities": {
                "predict": True,
                "kernels": True,
                "journey": has_capability("convlens.lens.journey"),
                "cam": cam,
                "featurevis": has_capability("convlens.lens.featurevis"),
                "runs": runs is not None,
            },
            "cam_methods": _cam_methods() if cam else [],
            "kernels": kernel_names(),
            "max_upload_bytes": max_upload,
        }

    @app.get("/api/layers", tags=["model"])
    async def layers(model: str | None = None, spatial: bool = False) -> dict[str, Any]:
        """The layer table of a model (name, type, output shape, parameters) and its stage layers."""
        def work() -> dict[str, Any]:
            m = model_store.get(model)
            rows = m.layers().to_list()
            if spatial:
                rows = [r for r in rows if len(r.get("output_shape") or ()) == 3]
            return {"model": model or model_store.default, "layers": rows, "stages": m.stage_layers(),
                    "default_cam_layer": _default_cam_layer(m)}
        return await queue.run(work)

    # -- images ----------------------------------------------------------------------
    @app.get("/api/samples", tags=["images"])
    def list_samples() -> list[dict[str, str]]:
        """The bundled sample photos, by id."""
        return images.samples()

    @app.get("/api/images/{image_id}", tags=["images"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def get_image(image_id: str, size: int | None = Query(None, ge=16, le=2048)) -> Response:
        """A sample or uploaded image as PNG (``size``: long side of a thumbnail)."""
        stored = images.get(image_id)

        def work() -> bytes:
            img = stored.image
            if size is not None and max(img.size) > size:
                img = img.copy()
                img.thumbnail((size, size))
            return imaging.png_bytes(img)
        return Response(await queue.run(work), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    async def _read_form(request: Request) -> tuple[bytes | None, str | None, dict[str, str]]:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, "send the image as multipart/form-data with the field 'file'")
        form = await request.form(max_files=1, max_fields=16)
        try:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return None, None, fields
            return await upload.read(), upload.filename, fields
        finally:
            await form.close()

    @app.post("/api/images", tags=["images"], openapi_extra=_multipart_doc())
    async def upload_image(request: Request) -> dict[str, Any]:
        """Upload an image (multipart field ``file``); answers its id for the other endpoints."""
        data, filename, _ = await _read_form(request)
        if data is None:
            raise HTTPException(422, "file: missing (send the image as the multipart field 'file')")
        stored = await queue.run(images.add, data, filename)
        return {"id": stored.id, "name": stored.name, "width": stored.image.width,
                "height": stored.image.height}

    # -- predictions -----------------------------------------------------------------
    @app.post("/api/predict", tags=["model"], openapi_extra=_multipart_doc(extra={
        "image": {"type": "string", "description": "an image id instead of a file"},
        "model": {"type": "string"}, "top_k": {"type": "integer", "default": 5}}))
    async def predict(request: Request) -> JSONResponse:
        """Top-k predictions for one image (multipart ``file``, or ``image`` = an id).

        Answers the same object as ``convlens predict --json`` for one image:
        ``{"image", "predictions": [{"index", "label", "probability"}, ...]}``; the
        header ``X-Convlens-Image`` carries the image id for the other endpoints.
        """
        data, filename, fields = await _read_form(request)
        top_k = _int_field(fields, "top_k", 5, 1, 1000)
        model_id = fields.get("model") or None

        model_id = model_store.check(model_id)
        if data is not None:
            stored = await queue.run(images.add, data, filename)
        else:
            stored = images.get(fields.get("image", ""))

        def work(items: list[Any]) -> list[dict[str, Any]]:
            m = model_store.get(model_id)
            preds, fresh = _predict_with_cam(m, [s.image for s in items], top_k)
            for s, f in zip(items, fresh):  # what the CAM view asks for next
                fresh_cams.put((model_id, s.id), f)
            return [{**p.to_dict(), "image": s.name} for s, p in zip(items, preds)]
        out = await queue.batch(("predict", model_id, top_k), stored, work)
        image_id = stored.id
        return JSONResponse(out, headers={"X-Convlens-Image": image_id})

    # -- CAM -------------------------------------------------------------------------
    @app.get("/api/cam", tags=["explain"])
    async def cam(image: str, model: str | None = None, method: str = "gradcam",
                  layer: str | None = None, target: str | None = None,
                  overlay: bool = False) -> dict[str, Any]:
        """A class activation map of one image: the heatmap as a colour PNG on the original
        picture (transparent where the model's crop did not look; the page lays it over the
        photo with an opacity slider), the raw heatmap on the model's input grid, the target
        explained and the peak.  ``overlay=true`` adds the server-drawn overlay.

        ``target``: a class index or label (default: the top prediction).  Concurrent
        requests with the same model, method, layer and target run as one batch.  The
        default (Grad-CAM of the top class at the default layer) of an image that went
        through ``POST /api/predict`` was computed in that forward pass: no new one here.
        """
        if not has_capability("convlens.lens.cam"):
            raise HTTPException(501, "CAM is not available in this build of convlens")
        from ..lens.cam import parse_methods

        methods = parse_methods(method)
        if len(methods) != 1:
            raise SpecError(f"method {method!r}: give one method at a time here")
        stored = images.get(image)
        model_id = model_store.check(model)
        key = (model_id, stored.id, methods[0], layer or None, target or None, overlay)
        hit = cams.get(key)
        if hit is not None:
            return hit
        fresh = fresh_cams.get((model_id, stored.id)) if methods[0] == "gradcam" else None
        if fresh is not None and ((layer and layer != fresh.layer) or (
                target not in (None, "") and str(target).strip() != str(fresh.target.index))):
            fresh = None  # another layer, or another class than the top one (asked by index on a click)
        if fresh is not None:  # computed in the image's predict pass: no new forward
            def from_fresh(items: list[Any]) -> list[dict[str, Any]]:
                return _fresh_cam_payloads(model_store.get(model_id), items, overlay)
            out = await queue.batch(("fresh-cam", model_id, overlay), (stored, fresh), from_fresh)
        else:
            def work(items: list[Any]) -> list[dict[str, Any]]:
                return _cam_payloads(model_store.get(model_id), items, methods[0], layer, target, overlay)
            out = await queue.batch(("cam",) + key[:1] + key[2:], stored, work)
        cams.put(key, out)
        return out

    # -- journey ---------------------------------------------------------------------
    async def _journey(model_id: str, stored: Any) -> Any:
        key = (model_id, stored.id)
        hit = journeys.get(key)
        if hit is not None:
            return hit

        def work() -> Any:
            from ..lens.journey import journey

            m = model_store.get(model_id)
            return journey(m, [stored.image], channels="all")
        j = await queue.run(work)
        journeys.put(key, j)
        return j

    @app.get("/api/journey", tags=["journey"])
    async def journey_view(image: str, model: str | None = None, layer: str | None = None,
                           max_channels: int = Query(48, ge=1, le=512),
                           grid: bool = False) -> dict[str, Any]:
        """The journey of an image: the stage layers and the channel grid of one of them."""
        if not has_capability("convlens.lens.journey"):
            raise HTTPException(501, "the journey is not available in this build of convlens")
        stored = images.get(image)
        model_id = model or model_store.default
        j = await _journey(model_id, stored)
        name = layer or j.layers[0]
        if name not in j.layers:
            from ..errors import closest
            raise LayerError(f"layer {name!r}: not a journey stage{closest(name, j.layers)}")

        def work() -> dict[str, Any]:
            return _journey_payload(j, name, max_channels, grid)
        return await queue.run(work)

    @app.get("/api/journey/channel", tags=["journey"])
    async def journey_channel(image: str, layer: str, channel: int = Query(..., ge=0),
                              model: str | None = None, size: int = Query(320, ge=32, le=1024)) -> dict[str, Any]:
        """One channel of a journey layer, enlarged, with its value range."""
        if not has_capability("convlens.lens.journey"):
            raise HTTPException(501, "the journey is not available in this build of convlens")
        stored = images.get(image)
        j = await _journey(model or model_store.default, stored)
        if layer not in j.layers:
            from ..errors import closest
            raise LayerError(f"layer {layer!r}: not a journey stage{closest(layer, j.layers)}")
        chans = list(j.channels[layer])
        if channel not in chans:
            raise SpecError(f"channel {channel}: layer {layer!r} has channels 0-{max(chans)}")
        values = j.maps[layer][0, chans.index(channel)]

        def work() -> dict[str, Any]:
            return {"layer": layer, "channel": channel, "shape": list(values.shape),
                    "min": float(values.min()), "max": float(values.max()),
                    "png": imaging.data_url(imaging.map_image(values, size, cmap="viridis", signed=False))}
        return await queue.run(work)

    # -- kernels lab -----------------------------------------------------------------
    @app.post("/api/kernels", tags=["kernels"])
    async def kernels(req: KernelRequest) -> dict[str, Any]:
        """Apply a kernel (name or matrix) with stride, padding, repeats and pooling; shapes and pictures."""
        stored = images.get(req.image)

        def work() -> dict[str, Any]:
            from ..kernels import apply_kernel

            img = stored.image
            if max(img.size) != req.size:
                scale = req.size / max(img.size)
                img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
            padding: Any = int(req.padding) if req.padding.strip().lstrip("-").isdigit() else req.padding
            r = apply_kernel(img, req.kernel, color=req.color, stride=req.stride, padding=padding,
                             repeat=req.repeat, pool=req.pool or None, pool_size=req.pool_size)
            out = r.to_dict()
            out["image"] = stored.id
            out["input_png"] = imaging.data_url(imaging.stage_image(r.input, 0))
            out["stage_pngs"] = [imaging.data_url(imaging.stage_image(s.tensor, 0)) for s in r.stages]
            return out
        return await queue.run(work)

    # -- feature visualization -------------------------------------------------------
    @app.get("/api/featurevis", tags=["featurevis"])
    async def featurevis(layer: str, model: str | None = None, channels: str = "0-7",
                         steps: int = Query(64, ge=1, le=512),
                         size: int = Query(128, ge=32, le=512)) -> dict[str, Any]:
        """Filters and activation-maximization images of a layer (when featurevis is present)."""
        if not has_capability("convlens.lens.featurevis"):
            raise HTTPException(501, "feature visualization is not available in this build of convlens")

        def work() -> dict[str, Any]:
            m = model_store.get(model)
            return _featurevis_payload(m, layer, channels, steps, size)
        return await queue.run(work)

    # -- runs ------------------------------------------------------------------------
    def _runs() -> RunStore:
        if runs is None:
            raise NotFound("no runs folder is served (start the server with --runs DIR)")
        return runs

    @app.get("/api/runs", tags=["runs"])
    def list_runs() -> list[dict[str, Any]]:
        """The training runs under ``--runs``, by id, with their headline metrics."""
        store = _runs()
        out = []
        for rid in store.ids():
            summary = _run_summary(store.path(rid))
            out.append({"id": rid, "model": f"run:{rid}", **summary})
        return out

    @app.get("/api/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str) -> dict[str, Any]:
        """One run: config, history (per epoch), metrics (accuracy, confusion, per class)."""
        path = _runs().path(run_id)
        return _run_details(run_id, path)

    @app.get("/api/runs/{run_id}/curves.png", tags=["runs"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def run_curves(run_id: str) -> Response:
        """The run's training curves picture."""
        path = _runs().path(run_id) / "curves.png"
        if not path.is_file():
            raise NotFound(f"run {run_id!r}: has no curves.png")
        return Response(path.read_bytes(), media_type="image/png")

    @app.get("/api/runs/{run_id}/top-losses", tags=["runs"])
    async def run_top_losses(run_id: str, k: int = Query(8, ge=1, le=32)) -> dict[str, Any]:
        """The test images the run got most wrong (highest loss), with Grad-CAM overlays of
        the true and the predicted class when the CAM capability is present."""
        path = _runs().path(run_id)
        key = ("top-losses", run_id, k, (path / "weights.safetensors").stat().st_mtime_ns
               if (path / "weights.safetensors").exists() else 0)
        hit = cams.get(key)
        if hit is not None:
            return hit
        out = await queue.run(_top_losses_payload, path, k)
        cams.put(key, out)
        return out

    return app


# --------------------------------------------------------------------------- helpers


def _multipart_doc(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {"file": {"type": "string", "format": "binary"}}
    props.update(extra or {})
    return {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": props}}}, "required": True}}


def _int_field(fields: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = fields.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{name}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SpecError(f"{name}: {value} is out of range {lo}-{hi}")
    return value


def _cam_methods() -> list[str]:
    from ..lens.cam import METHODS

    return list(METHODS)


def _default_cam_layer(m: Any) -> str | None:
    """The layer ``explain`` picks by default, or None (no CAM capability, or no conv layer)."""
    try:
        from ..lens.cam import default_layer

        return default_layer(m)
    except (ImportError, LayerError):
        return None


@dataclass(frozen=True)
class FreshCam:
    """The default Grad-CAM of one image, taken from its predict pass: the raw map on the
    layer's grid (before ReLU and normalisation) and the class it explains (the top one)."""

    layer: str
    raw: torch.Tensor  # (1, h, w)
    target: ClassScore


def _predict_with_cam(m: Any, images: list[Any], top_k: int) -> tuple[list[Prediction], list[FreshCam]]:
    """Top-k predictions and, from the same forward (plus a backward through the head only),
    the Grad-CAM of each image's top class at the model's default CAM layer: what
    ``explain(m, image)`` computes, without a second forward.  Without a CAM layer (or the
    CAM capability) it is :meth:`LensModel.predict` and no maps."""
    try:
        from ..lens import cam_methods as cm
        from ..lens.cam import default_layer

        layer = default_layer(m)
    except (ImportError, LayerError):
        return m.predict(images, top_k=top_k), []
    k = min(top_k, m.num_classes)
    x = m.preprocess(images)
    preds: list[Prediction] = []
    fresh: list[FreshCam] = []
    step = m.default_batch_size()
    for start in range(0, len(images), step):
        cap = cm.LayerCapture(m.module, [layer], gradients=True)
        logits = cap.forward(x[start:start + step])
        top = logits.detach().topk(1, dim=1).indices  # the target explain() resolves by default
        raw = cm.grad_cam(cap.activations[layer], cap.gradients(logits, top)[layer])
        chunk = m.top_k(logits.detach().float().softmax(dim=-1), images[start:start + step], start, k)
        preds.extend(chunk)
        fresh.extend(FreshCam(layer, raw[j].clone(), p.top) for j, p in enumerate(chunk))
    return preds, fresh


def _fresh_cam_payloads(m: Any, items: list[tuple[Any, FreshCam]], overlay: bool = False) -> list[dict[str, Any]]:
    """Payloads of predict-pass Grad-CAMs, normalised and upsampled as :func:`explain` does."""
    from ..lens.cam import Explanation, scale_maps

    heat = scale_maps([torch.stack([f.raw for _, f in items])], (m.config.height, m.config.width))
    stored = [s for s, _ in items]
    exp = Explanation(method="gradcam", layers=[items[0][1].layer], heatmaps=heat,
                      targets=[[f.target] for _, f in items], images=[s.name for s in stored],
                      config=m.config, sizes=[s.image.size for s in stored],
                      sources=[s.image for s in stored], model_name=m.name)
    return _payloads(m, exp, stored, overlay)


def _cam_payloads(m: Any, items: list[Any], method: str, layer: str | None, target: str | None,
                  overlay: bool = False) -> list[dict[str, Any]]:
    """One batched explanation for several stored images; a payload per image."""
    from ..lens.cam import explain

    tgt: Any = None
    if target not in (None, ""):
        tgt = int(target) if str(target).lstrip("-").isdigit() else target
    exp = explain(m, [s.image for s in items], method=method, target=tgt, layer=layer or None)
    return _payloads(m, exp, items, overlay)


def _payloads(m: Any, exp: Any, items: list[Any], overlay: bool) -> list[dict[str, Any]]:
    """The page's CAM payload per image of an :class:`~convlens.lens.cam.Explanation`."""
    out = []
    for i, stored in enumerate(items):
        heat = torch.as_tensor(exp.heatmap(i, 0, size="original"))
        # transparent where the model's crop did not look (the heatmap is 0 there by construction)
        x0, y0, x1, y1 = (round(v) for v in m.config.crop_box(stored.image.width, stored.image.height))
        mask = torch.zeros_like(heat)
        mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 1.0
        payload = {
            "image": stored.id,
            "method": exp.method,
            "layer": exp.layer or None,
            "target": exp.targets[i][0].to_dict(),
            "heatmap_png": imaging.data_url(imaging.heat_image(heat, mask=mask)),
            "raw_png": imaging.data_url(imaging.heat_image(torch.as_tensor(exp.heatmap(i, 0, size="input")))),
            "size": [stored.image.width, stored.image.height],
            "peak": list(exp.peak(i, 0)),
        }
        if overlay:
            payload["overlay_png"] = imaging.data_url(exp.overlay(i, 0))
        out.append(payload)
    return out


def _journey_payload(j: Any, name: str, max_channels: int, grid: bool = False) -> dict[str, Any]:
    """One journey layer: its shape, and a small PNG tile per channel on one colour scale."""
    from ..render.colors import robust_range

    full = list(j.channels[name])
    chans = full[:max_channels]
    maps = j.maps[name][0, :len(chans)]
    lo, hi = robust_range(maps, 0.005, 0.995)
    tile = 96
    big = F.interpolate(maps[:, None].float(), size=_fit(maps.shape[-2:], tile), mode="nearest"
                        if max(maps.shape[-2:]) <= tile else "area")[:, 0]
    rgb = colorize(big, lo, hi, j.cmap)
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
        "tiles": [{"channel": c, "png": imaging.data_url(Image.fromarray(rgb[i], "RGB"))}
                  for i, c in enumerate(chans)],
    }
    if grid:
        out["grid_png"] = imaging.data_url(j.grid(name))
    return out


def _fit(hw: Any, size: int) -> tuple[int, int]:
    h, w = int(hw[0]), int(hw[1])
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _featurevis_payload(m: Any, layer: str, channels: str, steps: int, size: int) -> dict[str, Any]:
    """The layer's filters (when it is a conv layer) and activation-maximization images."""
    from ..lens.featurevis import visualize

    out: dict[str, Any] = {"layer": layer}
    if has_capability("convlens.lens.filters"):
        from ..lens.filters import filters

        try:
            grid = filters(m, layer)
            out["filters_png"] = imaging.data_url(grid.render())
            out["filters"] = grid.to_dict()
        except ConvlensError as exc:
            out["filters_error"] = str(exc)
    vis = visualize(m, layer, channels, steps=steps, size=size)
    out["vis_png"] = imaging.data_url(vis.render())
    out["vis"] = vis.to_dict()
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_history(path: Path) -> dict[str, list[Any]]:
    if not path.is_file():
        return {}
    cols: dict[str, list[Any]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                try:
                    val: Any = float(v) if v not in (None, "") else None
                except ValueError:
                    val = v
                cols.setdefault(k, []).append(val)
    return cols


def _run_summary(path: Path) -> dict[str, Any]:
    metrics = _read_json(path / "metrics.json") or {}
    config = _read_json(path / "config.json") or {}
    return {
        "accuracy": metrics.get("accuracy"),
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "n_test": metrics.get("n_test"),
        "arch": config.get("arch") or config.get("model"),
        "data": config.get("data") or config.get("source"),
    }


def _run_details(run_id: str, path: Path) -> dict[str, Any]:
    metrics = _read_json(path / "metrics.json")
    config = _read_json(path / "config.json")
    class_names = None
    if isinstance(metrics, dict):
        class_names = metrics.get("class_names") or metrics.get("classes")
    if class_names is None and isinstance(config, dict):
        class_names = config.get("class_names") or config.get("classes")
    if class_names is None and isinstance(metrics, dict) and isinstance(metrics.get("per_class"), dict):
        class_names = list(metrics["per_class"])
    return {
        "id": run_id,
        "model": f"run:{run_id}",
        "config": config,
        "history": _read_history(path / "history.csv"),
        "metrics": metrics,
        "class_names": class_names,
        "has_curves": (path / "curves.png").is_file(),
    }


def _top_losses_payload(run_path: Path, k: int) -> dict[str, Any]:
    """The run's worst test mistakes (:func:`convlens.train.evaluate`), with Grad-CAM overlays
    for the true and the predicted class when the CAM capability is present."""
    from ..train import evaluate

    ev = evaluate(run_path, top_n=k, cams=has_capability("convlens.lens.cam"))
    items = []
    for i, row in enumerate(ev.top_losses):
        item = {key: row[key] for key in ("id", "true", "predicted", "loss", "p_predicted", "p_true") if key in row}
        item["id"] = Path(str(item.get("id", ""))).name
        if ev.top_images is not None:
            item["image_png"] = imaging.data_url(imaging.upscale(_uint8_image(ev.top_images[i]), 128))
        if ev.top_cams is not None:
            true_cam, pred_cam = ev.top_cams[i]
            item["cam_true_png"] = imaging.data_url(imaging.upscale(true_cam, 128))
            item["cam_png"] = imaging.data_url(imaging.upscale(pred_cam, 128))
        items.append(item)
    return {"items": items, "accuracy": ev.accuracy, "method": "gradcam" if ev.top_cams is not None else None}


def _uint8_image(t: Any) -> Image.Image:
    a = t.permute(1, 2, 0).cpu().numpy()
    if a.dtype != "uint8":
        a = (a.clip(0, 1) * 255).round().astype("uint8") if a.max() <= 1.0 else a.clip(0, 255).astype("uint8")
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).convert("RGB")
