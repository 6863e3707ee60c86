"""Self-contained HTML reports (a flow: it runs views and training-side code, then draws
with :mod:`convlens.render.html`).  ``demo_report`` is the built-in tour (``convlens demo``).

Everything the demo shows is computed from what ships in packages (the built-in
model, scikit-image's sample photos), so it works offline and without
``../shared``.

A report is one file, ``OUT/index.html``, with every picture embedded; it is written
atomically (a temporary name beside it, then a rename), so a report directory never holds
a half-written page.  This module is callable: ``convlens.report(...)`` is :func:`report`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import __version__
from ._modules import make_callable
from .errors import ImageError, RunError, SpecError
from .images import load_image, load_many
from .lens.cam import explain, parse_methods
from .lens.featurevis import visualize
from .lens.filters import FilterGrid, filters, pretty_kernel_name
from .lens.journey import journey
from .lens.kernels import KERNELS, apply_kernel, demo_image
from .lens.score import score
from .models import LensModel, load_model
from .models.lensmodel import image_name
from .render.colors import DIVERGING
from .render.grid import fit_image, map_tiles, titled, to_pil_image
from .render.grid import grid as compose
from .render.html import data_uri, render, write_html
from .render.overlay import NO_EVIDENCE, mark_empty
from .train import Run, compare, evaluate, train

#: scikit-image sample photos used by the demo (name -> loader name in skimage.data)
DEMO_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
DEMO_KERNELS = ("vertical-edge", "horizontal-edge", "sobel-x", "laplacian", "sharpen", "gaussian-blur", "emboss")


def sample_photos(names: Sequence[str] = DEMO_PHOTOS) -> dict[str, Image.Image]:
    """scikit-image's bundled sample photos as PIL images (offline)."""
    from skimage import data  # lazy: start-up time

    return {n: Image.fromarray(np.asarray(getattr(data, n)())) for n in names}


def _now() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def _thumb(img: Image.Image, size: int = 480) -> str:
    t = img.convert("RGB").copy()
    t.thumbnail((size, size))
    return data_uri(t, "JPEG")


def base_context() -> dict[str, Any]:
    return {"version": __version__, "generated": _now()}


def kernels_section(image: Image.Image,
                    kernels: Sequence[str] = DEMO_KERNELS) -> tuple[list[dict[str, Any]], list[str]]:
    """Figures of named kernels on ``image`` plus the 9x9 -> 7x7 -> 5x5 -> 3x3 arithmetic."""
    small = image.convert("L").copy()
    small.thumbnail((256, 256))
    out = []
    for name in kernels:
        r = apply_kernel(small, name)
        out.append({"name": name, "figure": data_uri(r.figure()), "arithmetic": r.to_dict()["arithmetic"]})
    pooled = apply_kernel(small, "sobel-x", stride=1, padding="same", pool="max", pool_size=2)
    out.append({"name": "sobel-x, same padding, then 2x2 max pooling", "figure": data_uri(pooled.figure()),
                "arithmetic": pooled.to_dict()["arithmetic"]})
    tiny = apply_kernel(demo_image(9), "vertical-edge", repeat=3)
    out.append({"name": "a 9x9 image through a 3x3 kernel, three times", "figure": data_uri(tiny.figure()),
                "arithmetic": tiny.to_dict()["arithmetic"]})
    return out, tiny.to_dict()["arithmetic"]


# --------------------------------------------------------------------------- the demo tour


@dataclass(frozen=True)
class TourSettings:
    """How much work each section of the demo tour does (``TourSettings.quick()``: a tour in
    seconds, for tests and CI; the defaults keep ``convlens demo`` short on a small CPU; timings in
    ``bench/RESULTS.md``, "Moved from docstrings").

    Attributes:
        cam_photos: the photos explained.
        cam_methods: one overlay column each (gradient CAMs share one forward and backward).
        pairs: the first-layer filters shown beside their nearest classic kernels.
        vis_layer: the layer of the activation-maximization channels, used when the model has
            it, else the default layer.
        vis_channels: the channels visualised.
        vis_classes: the classes visualised.
        vis_steps: optimization steps per visualisation.
        vis_size: the visualisations' resolution.
        score_photos: deletion/insertion are scored on the first this many photos.
        score_methods: the methods scored.
        score_steps: deletion/insertion intervals.
        epochs: epochs of the small CNN trained on scikit-learn's digits.
        top_n: its worst test mistakes shown.
    """

    cam_photos: tuple[str, ...] = DEMO_PHOTOS
    cam_methods: tuple[str, ...] = ("gradcam", "gradcam++", "layercam", "eigencam")
    pairs: int = 8
    vis_layer: str = "blocks.4"
    vis_channels: str = "0-3"
    vis_classes: int = 4
    vis_steps: int = 24
    vis_size: int = 128
    score_photos: int = 3
    score_methods: tuple[str, ...] = ("gradcam", "gradcam++", "eigencam")
    score_steps: int = 10
    epochs: int = 6
    top_n: int = 4

    @classmethod
    def quick(cls) -> "TourSettings":
        """Every section, with the least work that still draws it."""
        return cls(cam_photos=("chelsea", "coffee"), cam_methods=("gradcam", "eigencam"), pairs=4,
                   vis_channels="0-1", vis_classes=2, vis_steps=2, vis_size=64, score_photos=1,
                   score_methods=("gradcam",), score_steps=4, epochs=1, top_n=3)


#: The tour's sections: anchor -> heading (in page order).
DEMO_SECTIONS: dict[str, str] = {
    "kernels": "Kernels and pooling lab",
    "filters": "What the first layer learned",
    "predictions": "Predictions",
    "journey": "The journey of an image",
    "cams": "Where the network looks",
    "faithfulness": "How far to trust a map",
    "dreams": "What excites a channel or a class",
    "training": "Training a small CNN",
    "layers": "Layers",
}

#: One sentence per CAM method: what its map shows.
METHOD_NOTES: dict[str, str] = {
    "gradcam": "weights each channel of the last conv block by the mean gradient of the class score and "
               "keeps the positive sum: coarse blobs where the evidence for that class lies.",
    "gradcam++": "weights each location's positive gradients (higher-order terms), so the map tends to "
                 "cover the whole object, or several of them, not only its most telling part.",
    "layercam": "multiplies every activation by its own positive gradient, location by location: finer "
                "maps that also work on earlier layers.",
    "eigencam": "the first principal component of the layer's activations, without gradients: what "
                "dominates the layer, the same map whatever class is asked for.",
    "xgradcam": "Grad-CAM with gradients normalised by the activations (axiom-based).",
    "hirescam": "multiplies activations by their gradients element-wise before summing: faithful to "
                "the score, at the layer's resolution.",
    "scorecam": "masks the photo with each channel's map and weights the channel by how much the "
                "class score rises: no gradients.",
}


def _montage(left: Image.Image, right: Image.Image, size: int = 224) -> Image.Image:
    """Two photos, centre-square-cropped, side by side on a grey square (the model sees both)."""
    canvas = Image.new("RGB", (2 * size, 2 * size), (124, 124, 124))
    for k, img in enumerate((left, right)):
        img = img.convert("RGB")
        s = min(img.size)
        box = ((img.width - s) // 2, (img.height - s) // 2, (img.width + s) // 2, (img.height + s) // 2)
        canvas.paste(img.crop(box).resize((size, size), Image.BICUBIC), (k * size, size // 2))
    return canvas


def cam_panel(ex: Any, i: int, t: int = 0, method: str | None = None, side: int = 360) -> Image.Image:
    """A report's CAM panel: overlay ``i, t`` of ``method`` fitted into ``side`` pixels; an empty map
    (no positive evidence) carries its note written at the panel's size, where it can be read
    (a small picture enlarged with crisp pixels first)."""
    ov = ex.overlay(i, t, method=method, note=False)
    ov.thumbnail((side, side))
    return mark_empty(ov, min_width=min(side, 224)) if ex.empty(i, t, method) else ov


def _cam_caption(ex: Any, i: int, t: int = 0, method: str | None = None) -> str:
    """The target's title, and the empty map's note when there is nothing to show."""
    return ex.title(i, t) + (f" · {NO_EVIDENCE}" if ex.empty(i, t, method) else "")


def nearest_pairs(grid: FilterGrid, n: int = 8) -> list[int]:
    """Positions in ``grid.shown`` of the ``n`` filters most like a classic kernel (largest
    ``|cosine|`` first), leaving out those whose summed filter is under a quarter of the
    strongest one (colour-opponent filters whose channels cancel, and dead ones)."""
    if not grid.matches:
        return []
    summed = grid.weights[grid.shown].float().sum(dim=1)
    norms = summed.flatten(1).norm(dim=1)
    strong = [i for i in range(len(grid.matches)) if norms[i] > 0 and norms[i] >= 0.25 * float(norms.max())]
    return sorted(strong, key=lambda i: -abs(grid.matches[i].score))[:max(1, n)]


def filter_kernel_figure(grid: FilterGrid, n: int = 8) -> Image.Image:
    """The ``n`` first-layer filters closest to a classic kernel, each above the kernel it
    resembles: the filter in colour (mid-grey = 0, the grid's one scale), summed over its input
    channels (what it does to a grey image: what the similarity compares) and the lab's kernel
    (mirrored when the similarity is negative).  Filters whose channels nearly cancel (a summed
    filter under a quarter of the strongest one: colour-opponent filters) are left out: a
    cosine of almost nothing says little."""
    w = grid.weights[grid.shown].float()
    summed = w.sum(dim=1)
    best = nearest_pairs(grid, n)
    s = grid.scale
    size = 84
    colour = [fit_image(to_pil_image((w[i] / (2 * s) + 0.5).clamp(0, 1)), size, size) for i in best]
    grey, kern = [], []
    for i in best:
        match = grid.matches[i]
        k = torch.tensor(np.array(KERNELS[match.kernel], dtype=np.float32)) * (1 if match.score >= 0 else -1)
        for values, out in ((summed[i], grey), (k, kern)):
            m = float(values.abs().max()) or 1.0
            out.extend(map_tiles(values[None], -m, m, cmap=DIVERGING, tile=size))
    titles = [f"#{grid.shown[i]}\n{pretty_kernel_name(grid.matches[i].kernel)}"
              f"{' (mirror)' if grid.matches[i].score < 0 else ''}\ncosine {grid.matches[i].score:+.2f}"
              for i in best]
    body = compose([colour, grey, kern], row_titles=["filter", "summed", "kernel"],
                   col_titles=titles, cell=(128, size), font_size=11)
    return titled(body, f"{grid.layer}: the {len(best)} filters nearest a classic kernel",
                  "filter: its RGB weights, mid-grey = 0; summed: over R, G and B; kernel: the lab's matrix; "
                  "blue < 0 (white) < red, each tile scaled to its largest |value|")


def _vis_item(vis: Any) -> list[dict[str, str]]:
    return [{"caption": vis.caption(i), "image": data_uri(vis.pil(i))} for i in range(len(vis))]


def demo_report(out_dir: str | os.PathLike, model: Any = "effnet-lite0", *,
                settings: TourSettings | None = None,
                progress: Callable[[str], None] | None = None,
                done: Callable[[str, float], None] | None = None) -> Path:
    """Write ``out_dir/index.html``, the tour: kernels lab, the first layer's filters beside the
    classic kernels, predictions, the journey of a photo, CAMs (and a two-class picture), the
    faithfulness leaderboard, activation maximization, a small CNN trained on digits (curves,
    confusion matrix, top losses with Grad-CAM) and the layer table.

    Args:
        out_dir: the directory that receives ``index.html``.
        model: anything :func:`~convlens.models.load_model` takes (default: the built-in model).
        settings: how much work each section does (default :class:`TourSettings`;
            ``TourSettings.quick()`` for a tour in seconds).
        progress: called as ``progress(section)`` when a section starts.
        done: called as ``done(section, seconds)`` when it ends (the sections of
            :data:`DEMO_SECTIONS`, in order).

    Returns:
        Path: the written ``index.html``.

    Raises:
        ModelError: a model that cannot be resolved or loaded.
    """
    s = settings or TourSettings()
    say = progress or (lambda _msg: None)
    lm = model if isinstance(model, LensModel) else load_model(model)
    photos = sample_photos(tuple(dict.fromkeys((*DEMO_PHOTOS, *s.cam_photos))))
    ctx: dict[str, Any] = {}
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def section(key: str):
        say(DEMO_SECTIONS[key])
        t0 = time.perf_counter()
        yield
        timings[key] = time.perf_counter() - t0
        if done is not None:
            done(key, timings[key])

    with section("kernels"):
        ctx["kernels"], ctx["arithmetic"] = kernels_section(photos["chelsea"])

    with section("filters"):
        fg = filters(lm)
        ctx["filters"] = {"layer": fg.layer, "shape": list(fg.shape), "grid": data_uri(fg.figure()),
                          "pairs": data_uri(filter_kernel_figure(fg, s.pairs)) if fg.matches else None}

    with section("predictions"):
        preds = lm.predict(list(photos.values()), top_k=min(5, len(lm.class_names)))
        top = {n: p.top for n, p in zip(photos, preds)}
        ctx["predictions"] = [{"name": f"skimage.data.{n}()", "thumb": _thumb(img),
                               "predictions": [c.to_dict() for c in p.predictions]}
                              for (n, img), p in zip(photos.items(), preds)]

    with section("journey"):
        j = journey(lm, [photos["chelsea"]], channels="0-15")
        j.image_names = ["skimage.data.chelsea()"]
        ctx["journey"] = [{"layer": n, "type": j.types[n], "output_shape": j.shapes[n], "figure": data_uri(j.figure(n))}
                          for n in j.layers]
        ctx["journey_image"] = "skimage.data.chelsea()"

    with section("cams"):
        names = list(s.cam_photos)
        ex = explain(lm, [photos[n] for n in names], method=list(s.cam_methods))
        rows = []
        for i, n in enumerate(names):
            cells = []
            for m in ex.methods:
                cells.append({"method": m, "overlay": data_uri(cam_panel(ex, i, 0, m), "JPEG"),
                              "empty": ex.empty(i, 0, m)})
            rows.append({"name": f"skimage.data.{n}()", "target": ex.title(i, 0), "cells": cells})
        pair = _montage(photos["chelsea"], photos["coffee"])
        two = explain(lm, [pair], method="gradcam", target=[top["chelsea"].index, top["coffee"].index])
        both = []
        for t in range(2):
            both.append({"target": _cam_caption(two, 0, t), "overlay": data_uri(cam_panel(two, 0, t), "JPEG")})
        pic = pair.copy()
        pic.thumbnail((360, 360))
        ctx["cams"] = {"methods": [{"name": m, "layer": ex.layer_of(m), "note": METHOD_NOTES.get(m, "")}
                                   for m in ex.methods],
                       "rows": rows, "two": {"picture": data_uri(pic, "JPEG"), "maps": both,
                                             "labels": [top["chelsea"].label, top["coffee"].label]}}

    with section("faithfulness"):
        chosen = list(photos.values())[:max(1, s.score_photos)]
        sc = score(lm, chosen, method=list(s.score_methods), metric="deletion,insertion", steps=s.score_steps)
        ranking = sc.ranking()
        ctx["faithfulness"] = {"figure": data_uri(sc.figure()), "n": len(chosen), "steps": s.score_steps,
                               "best": ranking[0], "ranking": ranking,
                               "photos": [f"skimage.data.{n}()" for n in list(photos)[:len(chosen)]]}

    with section("dreams"):
        layer = s.vis_layer if s.vis_layer in dict(lm.module.named_modules()) else None
        chans = visualize(lm, layer, s.vis_channels, steps=s.vis_steps, size=s.vis_size)
        classes = list(dict.fromkeys(p.top.index for p in preds))[:max(1, s.vis_classes)]
        dreams = visualize(lm, objective="class", classes=classes, steps=s.vis_steps, size=s.vis_size)
        ctx["dreams"] = {"layer": chans.layer, "steps": s.vis_steps, "channels": _vis_item(chans),
                         "classes": _vis_item(dreams)}

    with section("training"):
        run = train("digits", epochs=s.epochs, progress=False)
        ev = evaluate(run, top_n=s.top_n)
        losses = ev.top_losses_figure()
        ctx["training"] = {"arch": run.config.get("arch", {}).get("spec") if isinstance(run.config.get("arch"), dict)
                           else run.config.get("arch"), "epochs": s.epochs, "accuracy": ev.accuracy,
                           "n_test": ev.metrics.get("n_test"), "n_classes": len(run.class_names),
                           "params": sum(p.numel() for p in run.model().module.parameters()),
                           "curves": data_uri(run.figure()), "confusion": data_uri(ev.confusion_figure()),
                           "top_losses": data_uri(losses) if losses is not None else None,
                           "top_n": len(ev.top_losses)}

    with section("layers"):
        table = lm.layers()
        ctx["layers"] = table.to_list()

    html = render("demo.html", model_name=lm.name, params=table.total_params, input_size=lm.config.input_size,
                  imagenet=len(lm.class_names) == 1000, top_k=min(5, len(lm.class_names)), sections=DEMO_SECTIONS,
                  timings=timings, **ctx, **base_context())
    return write_html(Path(out_dir) / "index.html", html)


# --------------------------------------------------------------------------- images explained and runs


def explained_report(images: Sequence[Any], out_dir: str | os.PathLike, model: Any = "effnet-lite0", *,
                     methods: str | Sequence[str] = ("gradcam",), layer: str | None = None, top_k: int = 5,
                     names: Sequence[str] | None = None,
                     progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/index.html``: top-k predictions and CAM overlays (top class) per image.

    Args:
        images: paths or PIL images.
        out_dir: the directory that receives ``index.html``.
        model: anything :func:`~convlens.models.load_model` takes (default: the built-in model).
        methods: CAM (or pixel attribution) methods, one overlay each, all computed in one batch
            per method.
        layer: the layer the CAMs read (default: the model's last convolutional stage).
        top_k: the predictions listed per image.
        names: the images' captions (default: their file names).
        progress: called as ``progress(step)`` when a step starts.

    Returns:
        Path: the written ``index.html``.

    Raises:
        ImageError: no images, or one that cannot be read.
        ConvlensError: an unknown method, layer or model (the subclass names which).

    Examples:
        >>> explained_report(["cat.jpg"], "report/", methods="gradcam,scorecam")  # doctest: +SKIP
    """
    say = progress or (lambda _msg: None)
    lm = model if isinstance(model, LensModel) else load_model(model)
    methods = parse_methods(methods)
    if not images:
        raise ImageError("no images to report on", param="images")
    labels = list(names) if names is not None else [Path(image_name(s, i)).name for i, s in enumerate(images)]
    pictures = load_many(images, lambda s: s if isinstance(s, Image.Image) else load_image(s, name=str(s)))
    say("predictions")
    preds = lm.predict(pictures, top_k=top_k)
    cams: list[list[dict[str, Any]]] = [[] for _ in pictures]
    for m in methods:
        say(m)
        ex = explain(lm, pictures, method=m, layer=layer)
        for i in range(len(pictures)):
            cams[i].append({"method": m, "layer": ex.layer if ex.layer != "input" else None,
                            "target": _cam_caption(ex, i, 0), "empty": ex.empty(i, 0),
                            "overlay": data_uri(cam_panel(ex, i, 0, side=720), "JPEG")})
    items = [{"name": n, "thumb": _thumb(img), "top": p.top.to_dict(),
              "predictions": [c.to_dict() for c in p.predictions], "cams": c}
             for n, img, p, c in zip(labels, pictures, preds, cams)]
    html = render("explained.html", model_name=lm.name, images=items, methods=methods, layer=layer,
                  top_k=top_k, **base_context())
    return write_html(Path(out_dir) / "index.html", html)


def run_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, top_n: int = 9, device: str = "cpu",
               progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/index.html`` for a training run: metrics, per-class table, curves,
    confusion matrix and the top losses with Grad-CAM (re-evaluated on the test split).

    Args:
        run_dir: the run directory written by :func:`~convlens.train.train`.
        out_dir: the directory that receives ``index.html``.
        top_n: the top losses shown.
        device: where the run is re-evaluated (``"cpu"``, ``"cuda"``).
        progress: called as ``progress(step)`` when a step starts.

    Returns:
        Path: the written ``index.html``.

    Raises:
        RunError: a missing or incomplete run directory.
        ConvlensError: a run whose weights or data can no longer be read (the subclass names
            which).

    Examples:
        >>> run_report("runs/faces", "report/")                          # doctest: +SKIP
    """
    say = progress or (lambda _msg: None)
    say("evaluating the run")
    run = Run.load(run_dir, device=device)
    ev = evaluate(run, top_n=top_n, device=device)
    metrics = ev.metrics
    per = metrics.get("per_class") or {}
    rows = list(per.items()) if isinstance(per, dict) else [(r.get("name", i), r) for i, r in enumerate(per)]
    keys = [k for k, v in rows[0][1].items() if isinstance(v, (int, float))] if rows else []
    say("figures")
    curves = None
    if (Path(run_dir) / "curves.png").is_file():
        curves = data_uri(Image.open(Path(run_dir) / "curves.png"))
    elif run.history:
        curves = data_uri(run.figure())
    losses_fig = ev.top_losses_figure()
    arch = run.config.get("arch")
    data = run.config.get("data") or {}
    html = render(
        "run.html", run_name=Path(run_dir).resolve().name,
        arch=arch.get("spec") if isinstance(arch, dict) else arch,
        data=data.get("spec") or data.get("kind") if isinstance(data, dict) else data,
        n_classes=len(run.class_names), epochs=len([h for h in run.history if h.get("phase", "train")]) or 0,
        metrics=metrics, per_class=rows, per_class_keys=keys, curves=curves,
        confusion=data_uri(ev.confusion_figure()),
        top_losses=data_uri(losses_fig) if losses_fig is not None else None,
        has_cams=ev.top_cams is not None, **base_context())
    return write_html(Path(out_dir) / "index.html", html)


def compare_report(run_dirs: Sequence[Any], out_dir: str | os.PathLike, *, top_n: int = 6, device: str = "cpu",
                   progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/index.html`` comparing two or more runs of the same data (dense vs conv,
    dropout vs none, augmentation vs none): one table of metrics, parameters and time, the
    curves overlaid, the confusion matrices side by side, and the same hardest test images
    for every run with its Grad-CAM (:func:`convlens.train.compare.compare`).

    Args:
        run_dirs: two or more run directories (or loaded runs) of the same data.
        out_dir: the directory that receives ``index.html``.
        top_n: the hardest test images shown.
        device: where the runs are re-evaluated (``"cpu"``, ``"cuda"``).
        progress: called as ``progress(step)`` when a step starts.

    Returns:
        Path: the written ``index.html``.

    Raises:
        SpecError: fewer than two runs, or a ``top_n`` below 0.
        RunError: a missing or incomplete run directory, or runs that cannot be compared
            (different data or classes).

    Examples:
        >>> compare_report(["runs/dense", "runs/conv"], "report/")     # doctest: +SKIP
    """
    say = progress or (lambda _msg: None)
    say(f"evaluating {len(run_dirs)} runs")
    cmp = compare(list(run_dirs), top_n=top_n, device=device)
    say("figures")
    shared = cmp.shared_figure()
    rows = cmp.table()
    best = max(r["accuracy"] for r in rows)
    html = render("compare.html", names=cmp.names, rows=rows, best=best, data=cmp.data_text(),
                  class_names=cmp.evaluations[0].class_names, curves=data_uri(cmp.curves_figure()),
                  confusion=data_uri(cmp.confusion_figure()),
                  shared=data_uri(shared) if shared is not None else None, n_common=cmp.n_common,
                  n_shared=len(cmp.shared), cam_notes=[(n, note) for n, note in zip(cmp.names, cmp.cam_notes) if note],
                  **base_context())
    return write_html(Path(out_dir) / "index.html", html)


def report(images: Sequence[Any] | None = None, *, run: str | os.PathLike | Sequence[Any] | None = None,
           out: str | os.PathLike = "report", model: Any = "effnet-lite0", demo: bool = False,
           **kwargs: Any) -> Path:
    """One self-contained HTML report: images explained, a training run, or the demo tour.

    The page embeds its figures and needs no server, so it can be mailed or archived; give exactly
    one of ``images``, ``run`` and ``demo``.

    Args:
        images: images to predict and explain (paths or PIL images), one CAM overlay per method.
        run: a training run directory (metrics, curves, confusion matrix, the top losses with
            Grad-CAM), or a list of two or more to compare side by side.
        out: the directory that receives ``index.html``.
        model: the model for ``images`` and ``demo``: anything
            :func:`~convlens.models.load_model` takes.
        demo: the guided tour of a model (kernels, filters, journey, CAMs, scores, feature
            visualisation, a small CNN trained on digits).
        **kwargs: the options of the report chosen: ``methods``, ``layer``, ``top_k`` and
            ``names`` for images (:func:`explained_report`), ``top_n`` and ``device`` for runs
            (:func:`run_report`, :func:`compare_report`), ``settings`` and ``done`` for the demo
            (:func:`demo_report`), and ``progress`` for all.

    Returns:
        Path: the written ``index.html``.

    Raises:
        SpecError: not exactly one of ``images``, ``run`` and ``demo``, or an empty ``run`` list.
        RunError: a ``run`` that is not a run directory (no ``config.json``).
        ConvlensError: a model, image or setting that the chosen report cannot use (the subclass
            names which).

    Examples:
        >>> import convlens as cl                                  # doctest: +SKIP
        >>> cl.report(["cat.jpg", "dog.jpg"], out="report/")      # doctest: +SKIP
        >>> cl.report(run="runs/faces", out="report/")            # doctest: +SKIP
        >>> cl.report(run=["runs/dense", "runs/conv"], out="report/")  # doctest: +SKIP
    """
    chosen = sum([bool(images), run is not None, bool(demo)])
    if chosen != 1:
        raise SpecError("report: give images, or run=RUN_DIR, or demo=True (exactly one)")
    if demo:
        return demo_report(out, model, **kwargs)
    if run is not None:
        runs = [run] if isinstance(run, (str, os.PathLike, Run)) else list(run)
        if not runs:
            raise SpecError("run: give one run directory, or two or more to compare", param="run")
        for r in runs:
            if not isinstance(r, Run) and not (Path(r) / "config.json").is_file():
                raise RunError(f"run {r}: not a run directory (no config.json)", param="run")
        if len(runs) > 1:
            return compare_report(runs, out, **kwargs)
        return run_report(runs[0], out, **kwargs)
    return explained_report(list(images), out, model, **kwargs)


make_callable(__name__, report)
