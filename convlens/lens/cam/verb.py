"""The verbs: ``explain`` (every method from one shared forward/backward) and ``predict_explain``."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...errors import LayerError, SpecError, TargetError
from ...models.lensmodel import ClassScore, LensModel, Prediction, as_list, image_name
from ..attention import ATTENTION_METHODS, attention_maps
from ..attribution import PIXEL_METHODS, attribute
from . import formulas as fm
from .capture import cam_forward
from .layers import as_lens, check_layers, default_layer, parse_layers
from .network import colour_max, full_grad, guided_gradients
from .objectives import TARGET_TYPES, Column, Columns, Embedding, Segmentation
from .registry import METHODS as REGISTRY
from .result import Explanation
from .targets import batch_spec, check_targets, parse_methods, resolve_columns, target_spec

#: Score-CAM's default number of channels (top-k by mean activation).
SCORECAM_CHANNELS = 128

#: ``explain_batch``'s results key of a CAM's raw grid at its one layer (ReLU'd and min-max scaled,
#: not upsampled): ``GRID + method``
GRID = "grid:"


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
            and images.shape[-3] == lm.config.channels \
            and tuple(images.shape[-2:]) == (lm.config.height, lm.config.width):
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


class _Flat(nn.Module):
    """A segmentation model seen as ``(N, K*H*W)`` scores (its output map flattened), so the CAM
    forward takes it; ``shape`` is the ``(K, H, W)`` of the last output (torchvision's
    ``{"out": ...}`` dicts are read at ``"out"``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.shape: tuple[int, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"] if "out" in out else next(iter(out.values()))
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise TargetError("a segmentation target needs a model whose output is a map per class "
                              "(N, classes, H, W)", param="target")
        self.shape = tuple(out.shape[1:])
        return out.flatten(1)


def _cam_maps(module, x, m: str, name: str, run_name: str, A, grads, output, cols: Columns, channels,
              batch_size, eigen_smooth: bool) -> torch.Tensor:
    """One CAM method's raw maps ``(n, T, h, w)`` at one layer (``run_name``: its path in ``module``)."""
    if A.ndim != 4:
        raise LayerError(f"layer {name!r} output has shape {tuple(A.shape[1:])}, not a feature map", param="layer")
    T = len(cols)
    if m in fm.WEIGHTED:
        return fm.reduce_channels(fm.WEIGHTED[m](A, grads["*"][name]), eigen_smooth)
    if m in ("shapleycam", "finercam"):
        return fm.reduce_channels(grads[m][name], eigen_smooth)  # weighted activations made by _grads
    if m == "eigengradcam":
        return fm.eigen_grad_cam(A, grads["*"][name])
    if m == "eigencam":
        return fm.eigen_cam(A, T)
    if m == "kpcacam":
        return fm.kernel_component(A).unsqueeze(1).expand(-1, T, -1, -1)
    if m == "fem":
        return fm.reduce_channels(fm.fem_weights(A)[:, None, :, None, None] * A.float().unsqueeze(1),
                                  eigen_smooth).expand(-1, T, -1, -1)
    k = channels_k(channels, A.shape[1], m)
    if m == "scorecam":
        # top-k channels by mean activation: class-independent, so one set of masked forwards
        # serves every target (r >= 0.99 to the exact map at k=128 on EfficientNet-Lite0's
        # 1,280 channels, see bench/cam_bench.py)
        sel = fm.select_channels(A.float().mean(dim=(-2, -1)), k)
        w = fm.score_cam(module, x, A, cols.score, T, sel, batch_size=batch_size)
    else:  # ablationcam
        sel = fm.select_channels(A.float().abs().mean(dim=(-2, -1)), k)
        w = fm.ablation_cam(module, run_name, x, A, output, cols.score, sel, batch_size=max(batch_size, 128))
    return fm.reduce_channels(w[..., None, None] * A.float().unsqueeze(1), eigen_smooth)


def finer_score(cols: Columns, alpha: float = 1.0, compare: int = 3) -> Callable[[torch.Tensor], torch.Tensor]:
    """FinerCAM's score per target column ``(n, T)``: the target logit against the ``compare``
    classes whose logits are closest to it, weighted by their softmax probabilities
    (pytorch-grad-cam's ``FinerWeightedTarget`` with its defaults, alpha 1 and classes 1-3)."""
    if not cols.classes_only:
        raise TargetError("finercam contrasts a class with its closest classes: it takes class targets only",
                          param="target")

    def score(out: torch.Tensor) -> torch.Tensor:
        z = out.float()
        prob = z.softmax(-1)
        cols_out = []
        for c in cols.cols:
            zk = z.gather(1, c.index[:, None])
            order = (z - zk).abs().detach().argsort(dim=1)[:, 1:1 + min(compare, z.shape[1] - 1)]
            p = prob.gather(1, order)
            cols_out.append((p * (zk - alpha * z.gather(1, order))).sum(1) / (p.sum(1) + 1e-9))
        return torch.stack(cols_out, dim=1)

    return score


def _grads(methods: list[str], output: torch.Tensor, acts: dict[str, torch.Tensor], cols: Columns
           ) -> dict[str, dict[str, torch.Tensor]]:
    """The gradients the layer methods need: ``"*"`` (N, T, C, h, w) of the target scores per layer
    (shared by the gradient CAMs); ``"shapleycam"``/``"finercam"``: their weighted activations."""
    names = list(acts)
    A = [acts[n] for n in names]
    if not output.requires_grad:
        raise LayerError(f"the target scores do not depend on layer {names[0]!r}", param="layer")
    T = len(cols)
    jobs = [m for m in ("*", "shapleycam", "finercam")
            if (m == "*" and any(x in fm.GRADIENT_CAMS for x in methods)) or m in methods]
    out: dict[str, dict[str, torch.Tensor]] = {}
    scores = cols.score(output.float(), None)
    for j, job in enumerate(jobs):
        last_job = j == len(jobs) - 1
        s = finer_score(cols)(output) if job == "finercam" else scores
        per_t = []
        for t in range(T):
            keep = not (last_job and t == T - 1)
            g = torch.autograd.grad(s[:, t].sum(), A, retain_graph=keep or job == "shapleycam",
                                    create_graph=job == "shapleycam", allow_unused=True)
            g = [torch.zeros_like(a) if gi is None else gi for gi, a in zip(g, A)]
            if job == "shapleycam":
                hvp = torch.autograd.grad(g, A, grad_outputs=[a.detach() for a in A], retain_graph=keep,
                                          allow_unused=True)
                g = [(gi - 0.5 * (torch.zeros_like(gi) if h is None else h)).detach() for gi, h in zip(g, hvp)]
            per_t.append([gi.detach() for gi in g])
        G = {n: torch.stack([p[k] for p in per_t], dim=1) for k, n in enumerate(names)}
        if job == "*":
            out["*"] = G
        else:  # Grad-CAM weights: the spatial mean of the (Shapley-corrected / Finer) gradient
            out[job] = {n: fm.weighted_grad_cam(acts[n], G[n]) for n in names}
    return out


def _forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = module(x)
    if not isinstance(out, torch.Tensor):
        raise LayerError(f"the model's output is {type(out).__name__}, not class scores", param="model")
    return out


def explain_batch(lm: LensModel, x: torch.Tensor, methods: list[str], spec: list[Any], layers: list[str],
                  channels: Any, batch_size: int, *, eigen_smooth: bool = False, columns: Columns | None = None
                  ) -> tuple[dict[str, torch.Tensor], Columns, torch.Tensor]:
    """All methods for one batch: ({method: (n, T, H, W)}, the target columns, the model's output).

    ``columns``: targets already resolved (the augmented copies of ``aug_smooth``); else from ``spec``."""
    seg = any(isinstance(item, Segmentation) for item in spec) or (columns is not None and any(
        c.kind == "segmentation" for c in columns.cols))
    module: nn.Module = _Flat(lm.module) if seg else lm.module
    run_layers = [f"net.{n}" for n in layers] if seg else list(layers)
    size = tuple(x.shape[-2:])
    cam_methods = [m for m in methods if m in fm.CAM_METHODS]
    if "guidedgradcam" in methods and "gradcam" not in cam_methods:
        cam_methods.append("gradcam")
    need_grad = any(m in fm.GRADIENT_CAMS or m in fm.SECOND_ORDER_CAMS for m in cam_methods)
    results: dict[str, torch.Tensor] = {}

    def resolve(out: torch.Tensor) -> Columns:
        if columns is not None:
            return columns
        return resolve_columns(spec, out.detach().float(), lm.class_names,
                               module.shape if isinstance(module, _Flat) else None)

    if cam_methods:
        output, acts = cam_forward(module, x, run_layers, gradients=need_grad)
        acts = {name: acts[r] for name, r in zip(layers, run_layers)}
        cols = resolve(output)
        dcols, where = cols, None
        if cols.classes_only:
            distinct, where = distinct_columns(cols.indices)
            if where is not None:
                dcols = Columns([Column("class", distinct[:, j]) for j in range(distinct.shape[1])])
        grads = _grads(cam_methods, output, acts, dcols) if need_grad else {}
        output = output.detach()
        acts = {n: a.detach() for n, a in acts.items()}
        raw = {m: [_cam_maps(module, x, m, name, r, acts[name], grads, output, dcols, channels, batch_size,
                             eigen_smooth) for name, r in zip(layers, run_layers)] for m in cam_methods}
        T = len(dcols)
        # every method's maps normalised and upsampled together: one pass over (n, methods x T, H, W)
        joint = fm.scale_maps([torch.cat([raw[m][k].float() for m in cam_methods], dim=1)
                               for k in range(len(layers))], size)
        results.update((m, maps if where is None else maps[:, where])
                       for m, maps in zip(cam_methods, joint.split(T, dim=1)))
        if len(layers) == 1:  # the raw grid (e.g. 7x7) before upsampling: Explanation.grids
            results.update((GRID + m, fm.normalize_maps(raw[m][0].float()) if where is None else
                            fm.normalize_maps(raw[m][0].float())[:, where]) for m in cam_methods)
    attention = [m for m in methods if m in ATTENTION_METHODS]
    if attention and cam_methods:
        results.update(attention_maps(module, x, attention, lambda _out: cols)[0])
    elif attention:  # the attention forward gives the output the targets are resolved on: one forward
        maps, cols, output = attention_maps(module, x, attention, resolve)
        results.update(maps)
    elif not cam_methods:
        output = _forward(module, x)
        cols = resolve(output)
    T = len(cols)
    if "fullgrad" in methods:
        results["fullgrad"] = fm.normalize_maps(full_grad(module, x, cols.score, T), relu=False)
    if "guidedbackprop" in methods or "guidedgradcam" in methods:
        gb = guided_gradients(module, x, cols.score, T)
        if "guidedbackprop" in methods:
            results["guidedbackprop"] = colour_max(gb)
        if "guidedgradcam" in methods:
            results["guidedgradcam"] = colour_max(gb * results["gradcam"].unsqueeze(2))
    if "gradcam" in results and "gradcam" not in methods:
        del results["gradcam"]
    pixel = [m for m in methods if m in PIXEL_METHODS]
    if pixel:
        if not cols.classes_only:
            raise TargetError(f"{pixel[0]} (a Captum pixel attribution) takes class targets only; "
                              "use a CAM for this target", param="target")
        black = lm.config.normalize(torch.zeros_like(x))
        for m in pixel:
            results[m] = attribute(module, x, m, cols.indices, baseline=black if m == "ig" else None,
                                   internal_batch_size=batch_size)
    return results, cols, output


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
    at_layer = any(REGISTRY[m].at_layer for m in methods)
    if layer is None:
        return [default_layer(lm)] if at_layer else []
    return check_layers(lm, parse_layers(layer))


#: ``aug_smooth``'s copies, as pytorch-grad-cam's default test-time augmentation: horizontal flip
#: or not, times the input tensor x 0.9, 1, 1.1
AUGMENTATIONS = tuple((flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))


def _flipped(cols: Columns) -> Columns:
    """The columns for the mirrored images (segmentation masks mirrored too)."""
    return Columns([Column(c.kind, c.index, c.label, c.other, c.sign, None if c.mask is None else c.mask.flip(-1),
                           c.vector, c.shape) for c in cols.cols])


def _smoothed(lm: LensModel, x: torch.Tensor, methods: list[str], spec: list[Any], layers: list[str],
              channels: Any, batch_size: int, eigen_smooth: bool
              ) -> tuple[dict[str, torch.Tensor], Columns, torch.Tensor]:
    """``aug_smooth``: every method's maps averaged over :data:`AUGMENTATIONS` (each mirrored back),
    the targets resolved once on the images as they are; the mean min-max scaled again."""
    res, cols, output = explain_batch(lm, x, methods, spec, layers, channels, batch_size, eigen_smooth=eigen_smooth)
    total = {m: torch.zeros_like(v) for m, v in res.items()}
    for flip, factor in AUGMENTATIONS:
        if not flip and factor == 1.0:
            part = res
        else:
            xa = x * factor
            xa = xa.flip(-1) if flip else xa
            part, _, _ = explain_batch(lm, xa, methods, spec, layers, channels, batch_size,
                                       eigen_smooth=eigen_smooth, columns=_flipped(cols) if flip else cols)
        for m, v in part.items():
            total[m] += v.flip(-1) if flip else v
    return {m: fm.normalize_maps(v / len(AUGMENTATIONS), relu=False) for m, v in total.items()}, cols, output


def _run(lm: LensModel, inputs: Inputs, methods: list[str], spec: list[Any], layers: list[str], channels: Any,
         batch_size: int, progress: Callable[[int, int], None] | None = None,
         on_logits: Callable[[int, torch.Tensor], None] | None = None, *, eigen_smooth: bool = False,
         aug_smooth: bool = False) -> Explanation:
    """Every batch of ``inputs`` through :func:`explain_batch`; the model's mode and grad flags restored."""
    module = lm.module
    was_training = module.training
    grad_flags = [p.requires_grad for p in module.parameters()]
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    grids: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    rows: list[list[ClassScore]] = []
    N = inputs.batch.shape[0]
    names = lm.class_names
    try:
        module.eval()
        for start in range(0, N, batch_size):
            x = inputs.batch[start:start + batch_size]
            part = batch_spec(spec, start, start + x.shape[0])
            if aug_smooth:
                res, cols, output = _smoothed(lm, x, methods, part, layers, channels, batch_size, eigen_smooth)
            else:
                res, cols, output = explain_batch(lm, x, methods, part, layers, channels, batch_size,
                                                  eigen_smooth=eigen_smooth)
            if on_logits is not None:
                on_logits(start, output)
            for m in methods:
                maps[m].append(res[m])
                if GRID + m in res:
                    grids[m].append(res[GRID + m])
            rows.extend(_scores(cols, output, names))
            if progress is not None:
                progress(min(start + batch_size, N), N)
    finally:
        module.train(was_training)
        for p, flag in zip(module.parameters(), grad_flags):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
    return Explanation(methods=list(methods), layers=list(layers),
                       maps=torch.stack([torch.cat(maps[m]) for m in methods]),
                       targets=rows, images=inputs.names, config=lm.config, sizes=inputs.sizes,
                       sources=inputs.sources, inputs=inputs.batch if inputs.sizes is None else None,
                       model_name=lm.name,
                       grids={m: torch.cat(g) for m, g in grids.items() if g and len(g) == len(maps[m])})


def _scores(cols: Columns, output: torch.Tensor, names: list[str]) -> list[list[ClassScore]]:
    """The :class:`ClassScore` per image and target column: the class (or the target's label) and
    its probability (see :meth:`Column.probability`; NaN where there is none)."""
    idx = cols.indices.cpu().tolist()
    probs = torch.stack([c.probability(output.detach()) for c in cols.cols], dim=1).cpu().tolist()
    out = []
    for row_t, row_p in zip(idx, probs):
        out.append([ClassScore(int(k), c.label if c.label is not None else
                               (names[k] if k < len(names) else f"class {k}"), float(pr))
                    for c, k, pr in zip(cols.cols, row_t, row_p)])
    return out


def _embed(lm: LensModel, spec: list[Any]) -> list[Any]:
    """``Embedding`` targets whose reference is an image: the model's output on it, as the vector."""
    out = []
    for item in spec:
        if isinstance(item, Embedding) and not (isinstance(item.reference, torch.Tensor) and item.reference.ndim == 1):
            ref = item.reference
            if hasattr(ref, "ndim") and getattr(ref, "ndim", 0) == 1:
                vec = torch.as_tensor(ref).float()
            else:
                with torch.inference_mode():
                    vec = _forward(lm.module, prepare(lm, ref).batch[:1])[0].flatten().float()
            item = Embedding(vec.clone(), item.label)
        out.append(item)
    return out


def _check_pairs(methods: list[str], spec: list[Any]) -> None:
    """Methods that take class targets only, asked for another score: one line, before any work."""
    other = next((item for item in spec if isinstance(item, TARGET_TYPES)), None)
    if other is None:
        return
    only = [m for m in methods if m == "finercam" or m in PIXEL_METHODS]
    if only:
        why = "contrasts a class with its closest classes" if only[0] == "finercam" else \
            "is a Captum pixel attribution"
        raise TargetError(f"{only[0]} {why}: it takes class targets only, not {type(other).__name__}",
                          param="target")


def explain(model: Any, images: Any, method: str | Sequence[str] = "gradcam", target: Any = None,
            layer: str | Sequence[str] | None = None, *, channels: int | str | None = None,
            batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
            eigen_smooth: bool = False, aug_smooth: bool = False) -> Explanation:
    """Heatmaps of where ``model`` looks for ``target`` in ``images``: one :class:`Explanation`.

    ``model``: a :class:`LensModel` (or a name for :func:`load_model`).
    ``images``: a path, PIL image or array, a list of them, or a preprocessed
    batch tensor ``(N, C, H, W)``.  ``method``: one name or several
    (``"gradcam,gradcam++"`` or a list; see :mod:`~convlens.lens.cam.registry`); all gradient
    CAMs share one forward/backward.
    ``target``: None (the predicted class), a class index, a label (case-insensitive),
    ``"top3"``, or a list; or per-image classes, an integer tensor or array ``(N, T)``
    (-1 for the image's predicted class; a column repeating another costs nothing); or another
    score (:mod:`~convlens.lens.cam.objectives`): ``Softmax(cls)`` / ``"softmax:LABEL"``,
    ``Sigmoid()`` / ``"sigmoid"``, ``Versus(a, b)`` / ``"A vs B"``, ``RawOutput()`` / ``"raw"``,
    ``Segmentation(cls, mask)`` / ``"seg:LABEL"``, ``Embedding(reference)`` / ``"similar:IMAGE"``.
    ``layer``: a module path (see ``convlens layers``), several
    (their maps are averaged, as pytorch-grad-cam does), or None for :func:`default_layer`.
    ``channels``: for ``scorecam``/``ablationcam``, how many channels to perturb (the top-k
    channels by mean activation) or ``"all"`` for the exact methods; default 128 for
    Score-CAM and all for Ablation-CAM (which only reruns the layers after the target
    layer).  ``batch_size``: images per forward; ``progress(done, total)`` after each batch.
    ``eigen_smooth``: for the CAMs that sum weighted activations over channels, their oriented
    first principal component instead (pytorch-grad-cam's option; :data:`formulas.SMOOTHABLE`).
    ``aug_smooth``: every map averaged over 6 copies of the images (mirrored or not, x 0.9/1/1.1),
    as pytorch-grad-cam's option (6x the time).

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
    if eigen_smooth:
        unsmoothable = [m for m in methods if m not in fm.SMOOTHABLE + fm.PROJECTIONS]
        if unsmoothable:
            raise SpecError(f"eigen_smooth applies to the CAMs that weigh channels ({', '.join(fm.SMOOTHABLE)}; "
                            f"{', '.join(fm.PROJECTIONS)} are projections already), not to {unsmoothable[0]}",
                            param="eigen_smooth")
    _check_pairs(methods, spec)
    layers = _layers(lm, methods, layer)
    spec = _embed(lm, spec)
    inputs = prepare(lm, images)
    check_targets(spec, lm.class_names, images=inputs.batch.shape[0])  # per-image rows, one per image
    return _run(lm, inputs, methods, spec, layers, channels, batch_size, progress,
                eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)


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
