"""The verbs: ``explain`` (every method from one shared forward/backward) and ``predict_explain``."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ...errors import LayerError, SpecError
from ...models.lensmodel import ClassScore, LensModel, Prediction, as_list, image_name
from ..attribution import PIXEL_METHODS, attribute
from . import formulas as fm
from .capture import cam_forward, target_gradients
from .layers import as_lens, check_layers, default_layer, parse_layers
from .result import Explanation
from .targets import batch_spec, check_targets, parse_methods, resolve_targets, target_spec

#: Score-CAM's default number of channels (top-k by mean activation).
SCORECAM_CHANNELS = 128


@dataclass
class Inputs:
    """Images ready for the model, and what is needed to draw them again."""

    batch: torch.Tensor  # (N, C, H, W) normalised, on the device
    names: list[str]
    sizes: list[tuple[int, int]] | None  # original (w, h), None for tensor input
    sources: list[Any]  # what to reload the originals from (paths, PIL images), or None


def prepare(lm: LensModel, images: Any, workers: int | None = None) -> Inputs:
    """Decode and preprocess ``images`` (a preprocessed batch tensor, or :class:`Inputs` prepared
    elsewhere, e.g. by the web server's I/O threads, are taken as they are)."""
    if isinstance(images, Inputs):
        return images if images.batch.device == lm.device else \
            Inputs(images.batch.to(lm.device), images.names, images.sizes, images.sources)
    if isinstance(images, torch.Tensor) and images.ndim in (3, 4) and images.dtype.is_floating_point \
            and images.shape[-3] == lm.config.channels and tuple(images.shape[-2:]) == (lm.config.height, lm.config.width):
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        return Inputs(batch.detach().to(lm.device), [f"image {i}" for i in range(batch.shape[0])], None,
                      [None] * batch.shape[0])
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        raise SpecError(f"a tensor batch must be preprocessed to {tuple(lm.config.input_size)} per image "
                        f"(got {tuple(images.shape[1:])}); pass images or use model.preprocess", param="images")
    items = as_list(images)
    transform = lm.config.transform

    def one(src):
        pil = lm.load(src)
        return transform(pil), pil.size, pil

    workers = workers or min(4, os.cpu_count() or 1, len(items))
    if workers > 1 and len(items) > 2:
        with ThreadPoolExecutor(workers) as pool:
            loaded = list(pool.map(one, items))
    else:
        loaded = [one(s) for s in items]
    batch = torch.stack([t for t, _, _ in loaded]).to(lm.device)
    names = [image_name(s, i) for i, s in enumerate(items)]
    # keep paths (cheap) to reload originals lazily; keep in-memory pictures as loaded
    sources = [s if isinstance(s, (str, os.PathLike)) else pil for s, (_, _, pil) in zip(items, loaded)]
    return Inputs(batch, names, [size for _, size, _ in loaded], sources)


def channels_k(channels: Any, C: int, method: str) -> int | None:
    """How many channels a perturbation CAM perturbs (None: all)."""
    if channels is None:
        return min(SCORECAM_CHANNELS, C) if method == "scorecam" else None
    if isinstance(channels, str):
        if channels.strip().lower() == "all":
            return None
        if channels.strip().isdigit():
            channels = int(channels)
        else:
            raise SpecError(f"channels must be a number or 'all' (got {channels!r})", param="channels")
    if int(channels) < 1:
        raise SpecError(f"channels must be at least 1 (got {channels})", param="channels")
    return min(int(channels), C)


def _cam_maps(module, x, m: str, name: str, A, grads, logits, targets, channels, batch_size) -> torch.Tensor:
    """One CAM method's raw maps ``(n, T, h, w)`` at one layer."""
    if A.ndim != 4:
        raise LayerError(f"layer {name!r} output has shape {tuple(A.shape[1:])}, not a feature map", param="layer")
    if m in fm.GRADIENT_FORMULAS:
        return fm.GRADIENT_FORMULAS[m](A, grads[name])
    if m == "eigencam":
        return fm.eigen_cam(A, targets.shape[1])
    k = channels_k(channels, A.shape[1], m)
    if m == "scorecam":
        # top-k channels by mean activation: class-independent, so one set of masked forwards
        # serves every target (r >= 0.99 to the exact map at k=128 on EfficientNet-Lite0's
        # 1,280 channels, see bench/cam_bench.py)
        sel = fm.select_channels(A.float().mean(dim=(-2, -1)), k)
        return fm.score_cam(module, x, A, targets, sel, batch_size=batch_size)
    sel = fm.select_channels(A.float().abs().mean(dim=(-2, -1)), k)  # ablationcam
    return fm.ablation_cam(module, name, x, A, logits, targets, sel, batch_size=max(batch_size, 128))


def explain_batch(lm: LensModel, x: torch.Tensor, methods: list[str], spec: list[Any], layers: list[str],
                  channels: Any, batch_size: int
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """All methods for one batch: ({method: (n, T, H, W)}, targets (n, T), logits (n, K))."""
    module = lm.module
    size = tuple(x.shape[-2:])
    cam_methods = [m for m in methods if m in fm.CAM_METHODS]
    need_grad = any(m in fm.GRADIENT_CAMS for m in cam_methods)
    results: dict[str, torch.Tensor] = {}
    if cam_methods:
        logits, acts = cam_forward(module, x, layers, gradients=need_grad)
        targets = resolve_targets(spec, logits.detach(), lm.class_names)
        distinct, where = distinct_columns(targets)
        grads = target_gradients(logits, acts, distinct) if need_grad else {}
        logits = logits.detach()
        acts = {n: a.detach() for n, a in acts.items()}
        raw = {m: [_cam_maps(module, x, m, name, acts[name], grads, logits, distinct, channels, batch_size)
                   for name in layers] for m in cam_methods}
        T = distinct.shape[1]
        # every method's maps normalised and upsampled together: one pass over (n, methods x T, H, W)
        joint = fm.scale_maps([torch.cat([raw[m][k].float() for m in cam_methods], dim=1)
                               for k in range(len(layers))], size)
        results.update((m, maps if where is None else maps[:, where])
                       for m, maps in zip(cam_methods, joint.split(T, dim=1)))
    else:
        with torch.inference_mode():
            logits = module(x)
        targets = resolve_targets(spec, logits.float(), lm.class_names)
    pixel = [m for m in methods if m in PIXEL_METHODS]
    if pixel:
        black = lm.config.normalize(torch.zeros_like(x))
        for m in pixel:
            results[m] = attribute(module, x, m, targets, baseline=black if m == "ig" else None,
                                   internal_batch_size=batch_size)
    return results, targets, logits


def distinct_columns(targets: torch.Tensor) -> tuple[torch.Tensor, list[int] | None]:
    """The target columns ``(n, T)`` that differ from every earlier one, and for each column the
    index of its distinct copy (None when all differ): a column that repeats another for every
    image (the predicted class asked twice, a label that is the prediction) costs no second
    backward and no second map."""
    T = targets.shape[1]
    if T == 1:
        return targets, None
    keep: list[int] = []
    where: list[int] = []
    for t in range(T):
        same = next((k for k, j in enumerate(keep) if torch.equal(targets[:, j], targets[:, t])), None)
        if same is None:
            keep.append(t)
            same = len(keep) - 1
        where.append(same)
    return (targets, None) if len(keep) == T else (targets[:, keep], where)


def _layers(lm: LensModel, methods: list[str], layer: Any) -> list[str]:
    if layer is None:
        return [default_layer(lm)] if any(m in fm.CAM_METHODS for m in methods) else []
    return check_layers(lm, parse_layers(layer))


def _run(lm: LensModel, inputs: Inputs, methods: list[str], spec: list[Any], layers: list[str], channels: Any,
         batch_size: int, progress: Callable[[int, int], None] | None = None,
         on_logits: Callable[[int, torch.Tensor], None] | None = None) -> Explanation:
    """Every batch of ``inputs`` through :func:`explain_batch`; the model's mode and grad flags restored."""
    module = lm.module
    was_training = module.training
    grad_flags = [p.requires_grad for p in module.parameters()]
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    tgts, prbs = [], []
    N = inputs.batch.shape[0]
    try:
        module.eval()
        for start in range(0, N, batch_size):
            x = inputs.batch[start:start + batch_size]
            part = batch_spec(spec, start, start + x.shape[0])
            res, t, logits = explain_batch(lm, x, methods, part, layers, channels, batch_size)
            if on_logits is not None:
                on_logits(start, logits)
            for m in methods:
                maps[m].append(res[m])
            tgts.append(t)
            prbs.append(logits.float().softmax(-1).gather(1, t))
            if progress is not None:
                progress(min(start + batch_size, N), N)
    finally:
        module.train(was_training)
        for p, flag in zip(module.parameters(), grad_flags):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
    targets = torch.cat(tgts).cpu().tolist()
    probs = torch.cat(prbs).cpu().tolist()
    names = lm.class_names
    scores = [[ClassScore(int(k), names[k] if k < len(names) else f"class {k}", float(pr))
               for k, pr in zip(row_t, row_p)] for row_t, row_p in zip(targets, probs)]
    return Explanation(methods=list(methods), layers=list(layers), maps=torch.stack([torch.cat(maps[m]) for m in methods]),
                       targets=scores, images=inputs.names, config=lm.config, sizes=inputs.sizes,
                       sources=inputs.sources, inputs=inputs.batch if inputs.sizes is None else None,
                       model_name=lm.name)


def explain(model: Any, images: Any, method: str | Sequence[str] = "gradcam", target: Any = None,
            layer: str | Sequence[str] | None = None, *, channels: int | str | None = None,
            batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> Explanation:
    """Heatmaps of where ``model`` looks for ``target`` in ``images``: one :class:`Explanation`.

    ``model``: a :class:`LensModel` (or a name for :func:`load_model`).
    ``images``: a path, PIL image or array, a list of them, or a preprocessed
    batch tensor ``(N, C, H, W)``.  ``method``: one name or several
    (``"gradcam,gradcam++"`` or a list); all gradient CAMs share one forward/backward.
    ``target``: None (the predicted class), a class index, a label (case-insensitive),
    ``"top3"``, or a list; or per-image classes, an integer tensor or array ``(N, T)``
    (-1 for the image's predicted class; a column repeating another costs nothing).  ``layer``: a module path (see ``convlens layers``), several
    (their maps are averaged, as pytorch-grad-cam does), or None for :func:`default_layer`.
    ``channels``: for ``scorecam``/``ablationcam``, how many channels to perturb (the top-k
    channels by mean activation) or ``"all"`` for the exact methods; default 128 for
    Score-CAM and all for Ablation-CAM (which only reruns the layers after the target
    layer).  ``batch_size``: images per forward; ``progress(done, total)`` after each batch.

    The result has a methods axis: ``ex.methods``, ``ex.maps`` ``(M, N, T, H, W)``,
    ``ex["gradcam"]`` one method, ``ex.heatmaps`` ``(N, T, H, W)`` when there is one.
    """
    lm = as_lens(model)
    methods = parse_methods(method)
    spec = target_spec(target, lm.class_names)
    check_targets(spec, lm.class_names)  # labels and indices fail before any work
    if batch_size < 1:
        raise SpecError(f"batch_size must be at least 1 (got {batch_size})", param="batch_size")
    if channels is not None:
        channels_k(channels, 1 << 30, "scorecam")
    layers = _layers(lm, methods, layer)
    inputs = prepare(lm, images)
    check_targets(spec, lm.class_names, images=inputs.batch.shape[0])  # per-image rows, one per image
    return _run(lm, inputs, methods, spec, layers, channels, batch_size, progress)


def predict_explain(model: Any, images: Any, *, top_k: int = 5, layer: str | Sequence[str] | None = None,
                    batch_size: int | None = None, method: str | Sequence[str] = "gradcam",
                    target: Any = None) -> tuple[list[Prediction], Explanation]:
    """Top-k predictions and, from the same forward (plus a backward through the head only), the
    maps of ``method`` (default Grad-CAM) for ``target`` (default each image's top class; as
    :func:`explain` takes it, per-image targets included) at ``layer`` (default: :func:`default_layer`).

    The predictions are those of :meth:`LensModel.predict` (same batches, same numbers); the
    explanation is ``explain(model, images, method=method, target=target, layer=layer)``'s.
    ``batch_size`` None picks :meth:`LensModel.default_batch_size`, as ``predict`` does.
    """
    lm = as_lens(model)
    if top_k < 1:
        raise SpecError(f"top_k must be at least 1 (got {top_k})", param="top_k")
    if batch_size is not None and batch_size < 1:
        raise SpecError(f"batch_size must be at least 1 (got {batch_size})", param="batch_size")
    batch_size = batch_size or lm.default_batch_size()
    k = min(top_k, lm.num_classes)
    methods = parse_methods(method)
    spec = target_spec(target, lm.class_names)
    check_targets(spec, lm.class_names)
    layers = _layers(lm, methods, layer)
    items = images if isinstance(images, (torch.Tensor, Inputs)) else as_list(images)
    inputs = prepare(lm, items)
    check_targets(spec, lm.class_names, images=inputs.batch.shape[0])
    preds: list[Prediction] = []
    chunk_src = inputs.names if isinstance(items, (torch.Tensor, Inputs)) else list(items)

    def keep(start: int, logits: torch.Tensor) -> None:
        probs = logits.float().softmax(dim=-1)
        preds.extend(lm.top_k(probs, chunk_src[start:start + logits.shape[0]], start, k))

    ex = _run(lm, inputs, methods, spec, layers, None, batch_size, on_logits=keep)
    return preds, ex
