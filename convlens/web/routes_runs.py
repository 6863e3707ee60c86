"""Routes of the training runs under ``--runs``: listing, one run, its curves, its top losses,
and two or more runs compared (:func:`convlens.train.compare`).

Every run is read through :class:`~convlens.models.run.Run` (``summary()``, ``metrics``,
``history_columns()``, ``figure()``); the top losses are :func:`convlens.train.evaluate`'s.
A run is named by its id (the directory's name), never by a server path.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ..errors import ConvlensError, SpecError
from ..train import compare, evaluate
from . import imaging
from .guard import public
from .payloads import top_losses_payload
from .state import Explorer, NotFound, Unreadable, explorer

router = APIRouter()
Ctx = Annotated[Explorer, Depends(explorer)]


def _row(run_id: str, run: Any) -> dict[str, Any]:
    """A run's summary for the page, by id (the server path it lives at stays on the server)."""
    summary = {k: v for k, v in run.summary().items() if k != "path"}
    return {**summary, "id": run_id, "model": f"run:{run_id}"}


@router.get("/api/runs", tags=["runs"])
def list_runs(ctx: Ctx) -> list[dict[str, Any]]:
    """The training runs under ``--runs``, by id, with their headline metrics.  A run that cannot
    be read (broken or hostile files, a link out of the runs folder) is listed after the others as
    ``{"id", "unreadable": why}``: one bad run never takes the list down."""
    store = ctx.need_runs()
    rows, bad = [], []
    for rid in store.ids():
        try:
            rows.append(_row(rid, store.run(rid)))
        except (ConvlensError, ValueError, OSError, KeyError, TypeError, RecursionError, OverflowError) as exc:
            why = str(exc) if isinstance(exc, Unreadable) else f"run {rid!r}: unreadable ({type(exc).__name__})"
            bad.append({"id": rid, "model": None, "accuracy": None, "unreadable": why})
    return public(rows + bad, [store.root])


@router.get("/api/runs/{run_id}", tags=["runs"])
def get_run(ctx: Ctx, run_id: str) -> dict[str, Any]:
    """One run: summary, config, history (per epoch, as columns), metrics (accuracy, confusion,
    per class) and its class names.  File paths in the config are given by their names."""
    store = ctx.need_runs()
    run = store.run(run_id)
    return public({**_row(run_id, run), "config": run.config, "history": run.history_columns(),
                   "metrics": run.metrics, "class_names": run.class_names, "has_curves": bool(run.history)},
                  [store.root])


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


@router.get("/api/compare", tags=["runs"])
async def compare_runs(ctx: Ctx, run: Annotated[list[str], Query()],
                       top: int = Query(6, ge=0, le=12)) -> dict[str, Any]:
    """Runs of the same data side by side (``run`` given 2-4 times, by id): the table
    (metrics, parameters, time), the overlaid curves, the confusion matrices and the same
    hardest test images per run with its Grad-CAM, as ``convlens compare`` draws them
    (``figure_png``: one PNG data URL of it all). 400 when the runs hold different data."""
    if not 2 <= len(run) <= 4 or len(set(run)) != len(run):
        raise SpecError(f"run: give 2 to 4 different runs to compare (got {', '.join(run) or 'none'})", param="run")
    store = ctx.need_runs()
    runs = [store.run(r) for r in run]  # 404 for an unknown id
    key = ("compare", tuple(store.stamp(r) for r in run), top)
    hit = ctx.cams.get(key)
    if hit is None:
        def work() -> dict[str, Any]:
            cmp = compare(runs, top_n=top, device=store.device)
            rows = [{**{k: v for k, v in r.items() if k != "path"}, "run": rid} for r, rid in zip(cmp.table(), run)]
            return public({"runs": rows, "data": cmp.data_text(), "class_names": cmp.evaluations[0].class_names,
                    "common_test_images": cmp.n_common, "figure_png": imaging.data_url(cmp.figure())},
                          [store.root])
        hit = await ctx.queue.run(work)
        ctx.cams.put(key, hit)
    return hit
