"""The verb ``score``: explain once, add the baselines, run every metric on every map, batched.

Every (method, image, target) map is flattened into one batch per protocol of
:mod:`convlens.lens.faithfulness`; the box metrics read the regions of
:mod:`convlens.lens.score.regions`; the result is a :class:`~convlens.lens.score.result.Scores`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ...errors import SpecError
from ...models.lensmodel import LensModel
from ...options import ScoreOptions, check_options
from .. import faithfulness as fa
from ..cam import explain
from ..cam.layers import as_lens
from ..cam.verb import prepare
from .metrics import NEEDS_BOXES, ROAD_FRACTIONS, centre_map, parse_metrics, random_maps, split_methods
from .regions import box_distance, box_mask, load_boxes, match_boxes, pointing_energy, target_boxes
from .result import Scores


def check_settings(metric: Any = "deletion,insertion", steps: int = 20, tolerance: float = 0.0,
                   batch_size: int = fa.FORWARD_BATCH) -> list[str]:
    """The cheap checks of :func:`score`'s settings, done before any model loads (the CLI calls it
    first so that a typo fails in a second, not after the model is built).

    Args:
        metric: the metric names (comma-separated or a list, or ``"all"``).
        steps: deletion/insertion intervals, 1 to :data:`~convlens.options.MAX_STEPS` (one step
            compares the whole image with the all-baseline one).
        tolerance: the pointing game's slack, in pixels.
        batch_size: perturbed inputs per forward pass.

    Returns:
        list[str]: the metric names, canonical and without repeats.

    Raises:
        SpecError: an unknown metric or a setting outside the bounds of
            :class:`convlens.options.ScoreOptions`, naming the parameter.
    """
    metrics = parse_metrics(metric)
    check_options(ScoreOptions, steps=steps, tolerance=tolerance, batch_size=batch_size)
    return metrics


def score(model: Any, images: Any, method: str | Sequence[str] = "gradcam",
          metric: str | Sequence[str] = "deletion,insertion", target: Any = None, layer: Any = None,
          boxes: Any = None, *, steps: int = 20, tolerance: float = 0.0, batch_size: int | None = None, seed: int = 0,
          progress: Callable[[int, int], None] | None = None) -> Scores:
    """Score each method's maps (and the ``random`` and ``centre`` baselines) with each metric.

    A heatmap can look plausible and still say little about the model; the metrics ask the model
    itself (does deleting the highlighted pixels lower the score?) or the annotation (does the peak
    land on the object?), and the baselines show what a map with no knowledge of the model gets.

    Args:
        model: anything :func:`~convlens.models.load_model` takes (a name, a checkpoint, a run
            directory, a ``torch.nn.Module``, a ``LensModel``).
        images: image paths, a folder, PIL images, arrays or an ``(N, 3, H, W)`` tensor.
        method: explanation methods as :func:`~convlens.lens.cam.explain` takes them
            (``"gradcam,scorecam"`` or a list); ``"random"`` and ``"centre"`` are added as baselines.
        metric: names from :data:`~convlens.lens.score.metrics.METRICS` (comma-separated or a list), or ``"all"``.
        target: the classes to explain, as ``explain`` takes them (default: the top prediction).
        layer: the layer the CAMs read (default: the model's last convolutional stage).
        boxes: the objects' regions for ``pointing`` and ``energy``: a dict, a JSON or CSV file of
            ``[x0, y0, x1, y1]`` boxes in original-image pixels per image, or a folder of mask
            images (the formats: :mod:`convlens.lens.score.regions`).
        steps: the number of deletion/insertion intervals (more steps, a finer curve).
        tolerance: the pointing game's slack around a box, in original-image pixels.
        batch_size: perturbed inputs per forward pass (default
            :data:`~convlens.lens.faithfulness.FORWARD_BATCH`); the maps themselves are explained in
            the model's own batch size, or ``batch_size`` when smaller.
        seed: seeds the random baseline, ROAD's noise and the bootstrap intervals, so a run repeats.
        progress: called as ``progress(done, total)`` after each stage of the work.

    Returns:
        Scores: a view of the values per method x metric x image x target, the
            deletion/insertion and ROAD curves, and a leaderboard with bootstrap intervals.

    Raises:
        SpecError: an unknown metric or method, ``steps``/``tolerance``/``batch_size`` out of
            bounds, a box metric without ``boxes``, or boxes with a tensor batch (which has no
            original size to map them from).
        ConvlensError: a model, image, layer or target that cannot be resolved (the subclass names
            which: :class:`~convlens.errors.ModelError`, :class:`~convlens.errors.ImageError`...).
    """
    lm: LensModel = as_lens(model)
    batch_size = fa.FORWARD_BATCH if batch_size is None else batch_size
    metrics = check_settings(metric, steps, tolerance, batch_size)
    explain_batch = min(batch_size, lm.default_batch_size())
    methods, baselines = split_methods(method)
    need_boxes = [m for m in metrics if m in NEEDS_BOXES]
    table = load_boxes(boxes)
    if need_boxes and not table:
        raise SpecError(f"metric {', '.join(need_boxes)} needs boxes (a JSON or CSV file of "
                        "[x0, y0, x1, y1] per image)", param="boxes")
    inputs = prepare(lm, images)
    x = inputs.batch
    N = x.shape[0]
    entries = match_boxes(table, inputs.names, require=bool(need_boxes)) if table else [None] * N
    if need_boxes and inputs.sizes is None:
        raise SpecError("boxes need image files (a tensor batch has no original size)", param="boxes")
    groups = [g for g, ms in (("deletion", {"deletion", "insertion"}), ("avgdrop", {"avgdrop", "increase"}),
                              ("road", {"road", "road-morf", "road-lerf"})) if ms & set(metrics)]
    jobs = ["explain", *groups]
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(jobs))

    maps, targets, layer_name = _explain_maps(lm, x, methods, target, layer, explain_batch)
    tick()
    T, H, W = maps.shape[2:]
    base = [random_maps((N, T, H, W), seed, maps.device), centre_map(H, W, maps.device).expand(N, T, H, W)]
    allmaps = torch.cat([maps, torch.stack(base)]) if baselines else maps
    values, curves, road_curves, fractions = _faithfulness(lm.module, x, allmaps, targets, metrics, steps=steps,
                                                           batch_size=batch_size, seed=seed, tick=tick)
    has = None  # (N, T) bool with the box metrics: which items had regions
    if need_boxes:
        values["pointing"], values["energy"], has = _box_scores(lm, inputs, entries, targets, allmaps, tolerance)
    values = {m: values[m].float() for m in metrics}
    return Scores(methods=[*methods, *baselines], metrics=metrics, values=values, images=list(inputs.names),
                  targets=targets, model_name=lm.name, layer=layer_name, steps=steps, seed=seed,
                  tolerance=float(tolerance), fractions=fractions, curves=curves, road_curves=road_curves,
                  has_boxes=has)


def _explain_maps(lm: LensModel, x: torch.Tensor, methods: list[str], target: Any, layer: Any,
                  batch_size: int) -> tuple[torch.Tensor, list[list[Any]], str]:
    """(maps ``(M, N, T, H, W)`` float32, the targets per image, the layer read) of every method.

    With only baselines, one saliency pass still resolves the targets and the map size (no maps kept).
    """
    if methods:
        ex = explain(lm, x, method=methods, target=target, layer=layer, batch_size=batch_size)
        return ex.maps.float(), ex.targets, ex.layer
    ex = explain(lm, x, method="saliency", target=target, batch_size=batch_size)
    return ex.maps[:0].float(), ex.targets, ""


def _faithfulness(module: torch.nn.Module, x: torch.Tensor, allmaps: torch.Tensor, targets: list[list[Any]],
                  metrics: list[str], *, steps: int, batch_size: int, seed: int, tick: Callable[[], None]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor],
                             torch.Tensor | None]:
    """(values, deletion/insertion curves, ROAD curves, fractions) of the perturbation metrics asked.

    Every (method, image, target) item is flattened: one batched call per protocol, the module in
    eval mode for the calls and back in its own mode after them.
    """
    M, N, T, H, W = allmaps.shape
    dev = allmaps.device
    idx_img = torch.arange(N, device=dev).view(1, N, 1).expand(M, N, T).reshape(-1)
    tgt = torch.tensor([[s.index for s in row] for row in targets], device=dev)
    tgt = tgt.view(1, N, T).expand(M, N, T).reshape(-1)
    flat_maps = allmaps.reshape(-1, H, W)
    xs = x[idx_img]
    was_training = module.training
    module.eval()
    values: dict[str, torch.Tensor] = {}
    curves: dict[str, torch.Tensor] = {}
    road_curves: dict[str, torch.Tensor] = {}
    fractions = None
    try:
        if "deletion" in metrics or "insertion" in metrics:
            fractions, de, ins = fa.deletion_insertion(module, xs, flat_maps, tgt, steps=steps, insert_from="blur",
                                                       batch_size=batch_size)
            fractions = fractions.cpu()
            curves = {"deletion": de.view(M, N, T, -1).cpu(), "insertion": ins.view(M, N, T, -1).cpu()}
            values["deletion"] = fa.auc(fractions, curves["deletion"])
            values["insertion"] = fa.auc(fractions, curves["insertion"])
            tick()
        if "avgdrop" in metrics or "increase" in metrics:
            drop, inc = fa.average_drop_increase(module, xs, flat_maps, tgt, batch_size=batch_size)
            values["avgdrop"], values["increase"] = drop.view(M, N, T).cpu(), inc.view(M, N, T).cpu()
            tick()
        if any(m.startswith("road") for m in metrics):
            morf = fa.road(module, xs, flat_maps, tgt, fractions=ROAD_FRACTIONS, order="morf", batch_size=batch_size,
                           seed=seed).view(M, N, T, -1).cpu()
            lerf = fa.road(module, xs, flat_maps, tgt, fractions=ROAD_FRACTIONS, order="lerf", batch_size=batch_size,
                           seed=seed + 1).view(M, N, T, -1).cpu()
            road_curves = {"morf": morf, "lerf": lerf}
            values["road-morf"], values["road-lerf"] = morf.mean(-1), lerf.mean(-1)
            values["road"] = ((lerf - morf) / 2).mean(-1)
            tick()
    finally:
        module.train(was_training)
    return values, curves, road_curves, fractions


def _box_scores(lm: LensModel, inputs: Any, entries: list[Any], targets: list[list[Any]], allmaps: torch.Tensor,
                tolerance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pointing hits, energy) ``(M, N, T)``, NaN where a target has no region, and which items had one."""
    M, N, T, H, W = allmaps.shape
    hit = torch.full((M, N, T), float("nan"))
    energy = torch.full((M, N, T), float("nan"))
    has = torch.zeros(N, T, dtype=torch.bool)
    for i in range(N):
        for t, s in enumerate(targets[i]):
            bs = target_boxes(entries[i], s.index, s.label, inputs.names[i])
            if not bs:
                continue
            has[i, t] = True
            mask = box_mask(lm.config, inputs.sizes[i], bs, inputs.names[i])
            dist = box_distance(lm.config, inputs.sizes[i], bs) - float(tolerance)
            h_, e_ = pointing_energy(allmaps[:, i, t].cpu(), mask.expand(M, H, W), (None, None), dist.expand(M, H, W))
            hit[:, i, t], energy[:, i, t] = h_, e_
    if not bool(has.any()):
        raise SpecError("boxes match none of the images' targets (key them by class index or label, or give "
                        "a plain list for every target)", param="boxes")
    return hit, energy, has
