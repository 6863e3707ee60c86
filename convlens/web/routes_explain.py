"""Routes that run the model on an image: top-k predictions and class activation maps.

``POST /api/predict`` answers the predictions of :func:`convlens.lens.predict_explain`, which
takes the default Grad-CAM of each image's top class from the same forward; that per-image
Explanation is kept (a bounded LRU) so the page's next ``GET /api/cam`` runs no forward.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from ..errors import LayerError, SpecError
from ..lens import explain, predict_explain
from ..lens.cam import default_layer, parse_methods
from ..lens.cam.verb import Inputs
from ..lens.score import score
from . import imaging
from .forms import multipart_only, read_upload, target_value
from .payloads import cam_payloads
from .state import Explorer, explorer

router = APIRouter()
Ctx = Annotated[Explorer, Depends(explorer)]


@router.post("/api/predict", tags=["model"], dependencies=[Depends(multipart_only)])
async def predict(ctx: Ctx, file: Annotated[UploadFile | None, File(description="an image file")] = None,
                  image: Annotated[str | None, Form(max_length=200,
                                                    description="an image id instead of a file")] = None,
                  model: Annotated[str | None, Form(max_length=300)] = None,
                  top_k: Annotated[int, Form(ge=1, le=1000)] = 5) -> JSONResponse:
    """Top-k predictions for one image (multipart ``file``, or ``image`` = an id).

    Answers the same object as ``convlens predict --json`` for one image:
    ``{"image", "predictions": [{"index", "label", "probability"}, ...]}``; the
    header ``X-Convlens-Image`` carries the image id for the other endpoints.
    Concurrent requests for the same model and ``top_k`` run as one batch (one forward).
    """
    data, filename = await read_upload(file)
    model_id = ctx.models.check(model or None)
    given = None if data is not None else ctx.images.get(image or "")

    def prepare() -> tuple[Any, Any]:
        # on the I/O threads, while the model worker runs the previous batch: decode the upload
        # and preprocess it (resize, crop, normalise), so the batch itself is only the forward
        stored = given if given is not None else ctx.images.add(data, filename)
        return stored, ctx.models.get(model_id).preprocess(stored.image, workers=1)

    def work(items: list[tuple[Any, Any]]) -> list[tuple[str, dict[str, Any]]]:
        m = ctx.models.get(model_id)
        stored = [s for s, _ in items]
        if has_cam_layer(m):
            # the batch was preprocessed from these pictures: the maps go back onto them
            inputs = Inputs(torch.cat([x for _, x in items]), [s.name for s in stored],
                            [s.image.size for s in stored], [s.image for s in stored])
            preds, ex = predict_explain(m, inputs, top_k=top_k, batch_size=even_chunks(len(items)))
            for i, s in enumerate(stored):  # what the CAM view asks for next
                ctx.fresh_cams.put((model_id, s.id), ex.take([i]))
        else:  # nothing to explain by default (no conv layer): the predictions alone
            preds = m.predict([s.image for s in stored], top_k=top_k)
        return [(s.id, {**p.to_dict(), "image": s.name}) for s, p in zip(stored, preds)]
    image_id, out = await ctx.queue.batch(("predict", model_id, top_k), None, work, prepare=prepare)
    return JSONResponse(out, headers={"X-Convlens-Image": image_id})


#: the most images one forward of a gathered batch takes (its activations and gradients are
#: held at once: a forward of 20-32 images raised the server's RSS by ~300 MB for good)
MAX_FORWARD = 16


def even_chunks(n: int, most: int = MAX_FORWARD) -> int:
    """The forward size that runs ``n`` images in as few forwards of at most ``most`` images as
    possible, of about equal sizes: at 20 clients batches of 10 came out, which the library's
    default chunks of 8 ran as 8 + 2, and a forward of 2 images costs ~1.7x one of 8 per image.

    >>> [even_chunks(n) for n in (1, 10, 16, 17, 20, 32)]
    [1, 10, 16, 9, 10, 16]
    """
    forwards = -(-n // most)
    return -(-n // forwards)


def has_cam_layer(m: Any) -> bool:
    """Whether ``explain`` finds a default layer in the model (it has a conv feature map)."""
    try:
        default_layer(m)
    except LayerError:
        return False
    return True


def _fresh(ctx: Explorer, model_id: str, image_id: str, method: str, layer: str | None,
           target: str | None) -> Any | None:
    """The predict pass's Explanation of the image when it answers this request: Grad-CAM of the
    top class at the default layer (also when that layer or the top class's index is named)."""
    if method != "gradcam":
        return None
    ex = ctx.fresh_cams.get((model_id, image_id))
    if ex is None:
        return None
    if layer and layer != ex.layer:
        return None
    if target not in (None, "") and str(target).strip() != str(ex.targets[0][0].index):
        return None  # another class than the top one (the top one asked by index: a click on it)
    return ex


@router.get("/api/cam", tags=["explain"])
async def cam(ctx: Ctx, image: Annotated[str, Query(max_length=200)],
              model: Annotated[str | None, Query(max_length=300)] = None,
              method: Annotated[str, Query(max_length=200)] = "gradcam",
              layer: Annotated[str | None, Query(max_length=300)] = None,
              target: Annotated[str | None, Query(max_length=200)] = None,
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
    methods = parse_methods(method)
    if len(methods) != 1:
        raise SpecError(f"method {method!r}: give one method at a time here", param="method")
    stored = ctx.images.get(image)
    model_id = ctx.models.check(model)
    key = (model_id, stored.id, methods[0], layer or None, target or None, overlay)
    hit = ctx.cams.get(key)
    if hit is not None:
        return hit
    fresh = _fresh(ctx, model_id, stored.id, methods[0], layer, target)
    if fresh is not None:  # computed in the image's predict pass: no new forward
        m = ctx.models.get(model_id)  # loaded already: the predict pass used it
        out = await ctx.queue.run_io(lambda: cam_payloads(m, fresh, [stored], overlay)[0])
    else:
        def work(items: list[Any]) -> list[dict[str, Any]]:
            ex = explain(ctx.models.get(model_id), [s.image for s in items], method=methods[0],
                         target=target_value(target), layer=layer or None)
            return cam_payloads(ctx.models.get(model_id), ex, items, overlay)
        out = await ctx.queue.batch(("cam",) + key[:1] + key[2:], stored, work)
    ctx.cams.put(key, out)
    return out


@router.get("/api/score", tags=["explain"])
async def faithfulness(ctx: Ctx, image: Annotated[str, Query(max_length=200)],
                       model: Annotated[str | None, Query(max_length=300)] = None,
                       method: Annotated[str, Query(max_length=200)] = "gradcam",
                       target: Annotated[str | None, Query(max_length=200)] = None,
                       layer: Annotated[str | None, Query(max_length=300)] = None,
                       steps: int = Query(10, ge=1, le=50)) -> dict[str, Any]:
    """How faithful is this map: deletion and insertion curves of the shown image for each of
    ``method`` (comma-separated, at most 4) and the ``random``/``centre`` baselines, from
    :func:`convlens.lens.score.score` (its ``to_dict()``), with its figure as ``figure_png``.
    ``steps``: deletion/insertion intervals (1-50; each is one batched forward per map)."""
    methods = parse_methods(method)
    if len(methods) > 4:
        raise SpecError(f"method {method!r}: at most 4 methods at a time here", param="method")
    stored = ctx.images.get(image)
    model_id = ctx.models.check(model)
    key = ("score", model_id, stored.id, tuple(methods), target or None, layer or None, steps)
    hit = ctx.cams.get(key)
    if hit is not None:
        return hit

    def work() -> dict[str, Any]:
        s = score(ctx.models.get(model_id), [stored.image], method=methods, metric="deletion,insertion",
                  target=target_value(target), layer=layer or None, steps=steps)
        return {**s.to_dict(), "image": stored.id, "figure_png": imaging.data_url(s.figure())}
    out = await ctx.queue.run(work)
    ctx.cams.put(key, out)
    return out
