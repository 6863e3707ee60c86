"""The local web explorer: a FastAPI app over the convlens API.

One page (``/``) with its JS/CSS shipped in the package (no CDN, no inline
script, so the strict Content-Security-Policy of :mod:`.middleware` holds) and a JSON API
under ``/api/...`` (documented at ``/docs`` and ``/openapi.json``).  Models are loaded
once and cached; model work runs on a worker thread behind a bounded queue
(503 + ``Retry-After`` when full); uploads are size-limited (413) and bad input
answers 4xx with ``{"error": "..."}`` naming the field at fault.  The client names samples,
uploads, models and runs by id, never a path on the server, and no answer carries one
(:mod:`.guard`).  Only local host names are answered and cross-site writes are refused
(:class:`.middleware.LocalOnly`); a stalled body answers 408.  SECURITY.md is the threat model.

The routes live by area in ``routes_*.py``: each is a public verb of convlens plus the
``to_dict()`` and pictures of its result (:mod:`.payloads`); :mod:`.state` holds the stores,
caches and the work queue.

>>> from fastapi.testclient import TestClient                  # doctest: +SKIP
>>> client = TestClient(create_app(models=["effnet-lite0"]))
>>> client.post("/api/predict", files={"file": open("cat.jpg", "rb")}).json()["predictions"][0]
{'index': 282, 'label': 'tiger cat', 'probability': 0.61}
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ConvlensError, ImageError
from . import routes_audit, routes_explain, routes_main, routes_runs, routes_views
from .guard import public_text
from .middleware import CSP, BodyTimeout, LimitBody, LocalOnly, SecurityHeaders
from .state import SAMPLES, Busy, Explorer, ImageStore, ModelStore, NotFound, RunStore, WorkQueue

__all__ = ["CSP", "DEFAULT_MAX_UPLOAD", "create_app"]

HERE = Path(__file__).resolve().parent
RENDER_STATIC = HERE.parent / "render" / "static"

DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024

#: seconds a request body may stall before the server answers 408 and lets the connection go
DEFAULT_BODY_TIMEOUT = 30.0


def create_app(models: Iterable[Any] = ("effnet-lite0",), runs_dir: str | Path | None = None, *,
               max_upload: int = DEFAULT_MAX_UPLOAD, queue_size: int = 32, workers: int = 1,
               samples: Iterable[str] = SAMPLES, device: str = "cpu", allow_hosts: Iterable[str] = (),
               body_timeout: float = DEFAULT_BODY_TIMEOUT) -> FastAPI:
    """Build the explorer app.

    ``models``: names for :func:`~convlens.models.load_model` or live ``LensModel``
    objects (the first is the default); ``runs_dir``: a folder of training runs
    (each also served as model ``run:NAME``); ``max_upload``: bytes per request
    body (413 beyond); ``queue_size``: model jobs admitted at once (503 beyond).
    ``allow_hosts``: host names answered besides localhost, 127.0.0.1 and ::1 (the address the
    server is bound to, ``--allow-host`` values; 421 for any other ``Host``; a test client's
    ``testserver`` only when named here); ``body_timeout``: seconds a request body may stall (408).
    """
    runs = RunStore(runs_dir, device=device) if runs_dir is not None else None
    ctx = Explorer(models=ModelStore(list(models), runs=runs, device=device), images=ImageStore(samples),
                   runs=runs, queue=WorkQueue(workers=workers, capacity=queue_size), max_upload=max_upload)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        ctx.queue.start()
        yield
        ctx.queue.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="convlens explorer",
        version=__version__,
        description="See inside convolutional image classifiers: predictions, CAMs, feature maps, "
                    "kernels and training runs. Images are named by id (`sample:NAME` or the "
                    "`upload:HEX` that `POST /api/images` returns), never by a server path.",
    )
    app.state.explorer = ctx
    # the parts tests and benches look at, by their old names
    app.state.models, app.state.images, app.state.runs = ctx.models, ctx.images, ctx.runs
    app.state.queue, app.state.fresh_cams, app.state.max_upload = ctx.queue, ctx.fresh_cams, max_upload
    # the last added runs first: headers on every answer, then who may ask, then the body's limits
    app.add_middleware(BodyTimeout, seconds=body_timeout)
    app.add_middleware(LimitBody, limit=max_upload)
    app.add_middleware(LocalOnly, allow_hosts=allow_hosts)
    app.add_middleware(SecurityHeaders)
    # follow_symlink=False (Starlette's default, pinned): a file must resolve inside its folder
    app.mount("/static", StaticFiles(directory=HERE / "static", follow_symlink=False), name="static")
    app.mount("/render-static", StaticFiles(directory=RENDER_STATIC, follow_symlink=False), name="render-static")
    add_error_handlers(app, roots=[runs.root] if runs is not None else [])
    for area in (routes_main, routes_explain, routes_views, routes_runs, routes_audit):
        app.include_router(area.router)
    return app


def add_error_handlers(app: FastAPI, roots: Iterable[Path] = ()) -> None:
    """Every failure answers one JSON line ``{"error": ...}``: 404 for an unknown id, 422 for a
    bad image or request body, 400 for any other bad input, 503 + Retry-After when busy.  A message
    that quotes a file names it without the server's path (:func:`.guard.public_text`)."""
    roots = list(roots)

    def error(text: Any, status: int, headers: Any = None) -> JSONResponse:
        return JSONResponse({"error": public_text(str(text), roots)}, status_code=status, headers=headers)

    @app.exception_handler(NotFound)
    async def not_found(_r: Request, exc: NotFound) -> JSONResponse:
        return error(exc, 404)

    @app.exception_handler(ConvlensError)
    async def bad_input(_r: Request, exc: ConvlensError) -> JSONResponse:
        # the library names its parameter (top_k, layer, target...), as the query and form fields do
        status = 422 if isinstance(exc, ImageError) else 400
        return error(exc, status)

    @app.exception_handler(Busy)
    async def busy(_r: Request, _exc: Busy) -> JSONResponse:
        return JSONResponse({"error": "the server is busy: too many requests queued, retry shortly"},
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.detail, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(_r: Request, exc: Exception) -> JSONResponse:
        # a bug, still answered as one JSON line (no traceback, no path); the server logs it
        return error(f"internal error ({type(exc).__name__}); please report it", 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return error("; ".join(parts), 422)
