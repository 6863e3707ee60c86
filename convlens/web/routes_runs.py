"""Routes of the training runs under ``--runs``: listing, one run, its curves, its top losses.

Every run is read through :class:`~convlens.models.run.Run` (``summary()``, ``metrics``,
``history_columns()``, ``figure()``); the top losses are :func:`convlens.train.evaluate`'s.
A run is named by its id (the directory's name), never by a server path.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ..train import evaluate
from . import imaging
from .payloads import top_losses_payload
from .state import Explorer, NotFound, explorer

router = APIRouter()
Ctx = Annotated[Explorer, Depends(explorer)]


def _row(run_id: str, run: Any) -> dict[str, Any]:
    """A run's summary for the page, by id (the server path it lives at stays on the server)."""
    summary = {k: v for k, v in run.summary().items() if k != "path"}
    return {**summary, "id": run_id, "model": f"run:{run_id}"}


@router.get("/api/runs", tags=["runs"])
def list_runs(ctx: Ctx) -> list[dict[str, Any]]:
    """The training runs under ``--runs``, by id, with their headline metrics."""
    store = ctx.need_runs()
    return [_row(rid, store.run(rid)) for rid in store.ids()]


@router.get("/api/runs/{run_id}", tags=["runs"])
def get_run(ctx: Ctx, run_id: str) -> dict[str, Any]:
    """One run: summary, config, history (per epoch, as columns), metrics (accuracy, confusion,
    per class) and its class names."""
    run = ctx.need_runs().run(run_id)
    return {**_row(run_id, run), "config": run.config, "history": run.history_columns(),
            "metrics": run.metrics, "class_names": run.class_names, "has_curves": bool(run.history)}


@router.get("/api/runs/{run_id}/curves.png", tags=["runs"], response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def run_curves(ctx: Ctx, run_id: str) -> Response:
    """The run's training curves (``Run.figure()``)."""
    store = ctx.need_runs()
    run = store.run(run_id)
    if not run.history:
        raise NotFound(f"run {run_id!r}: has no training history")
    key = ("curves", store.stamp(run_id))
    png = ctx.cams.get(key)
    if png is None:
        png = await ctx.queue.run(lambda: imaging.png_bytes(run.figure()))
        ctx.cams.put(key, png)
    return Response(png, media_type="image/png")


@router.get("/api/runs/{run_id}/top-losses", tags=["runs"])
async def run_top_losses(ctx: Ctx, run_id: str, k: int = Query(8, ge=1, le=32)) -> dict[str, Any]:
    """The test images the run got most wrong (highest loss), with Grad-CAM overlays of the
    true and the predicted class."""
    store = ctx.need_runs()
    run = store.run(run_id)
    key = ("top-losses", store.stamp(run_id), k)
    hit = ctx.cams.get(key)
    if hit is None:
        hit = await ctx.queue.run(lambda: top_losses_payload(evaluate(run, top_n=k)))
        ctx.cams.put(key, hit)
    return hit
