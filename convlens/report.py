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

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from . import __version__
from ._modules import make_callable
from .errors import ImageError, RunError, SpecError
from .images import load_image, load_many
from .lens.cam import explain, parse_methods
from .lens.journey import journey
from .lens.kernels import apply_kernel, demo_image
from .models import LensModel, load_model
from .models.lensmodel import image_name
from .render.html import data_uri, render, write_html
from .train import Run, evaluate

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


def kernels_section(image: Image.Image, kernels: Sequence[str] = DEMO_KERNELS) -> tuple[list[dict[str, Any]], list[str]]:
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


def demo_report(out_dir: str | os.PathLike, model: Any = "effnet-lite0", *,
                progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/index.html``: kernels lab, predictions, journey, layer table."""
    say = progress or (lambda _msg: None)
    lm = model if isinstance(model, LensModel) else load_model(model)
    photos = sample_photos()

    say("kernels lab")
    kernels, arithmetic = kernels_section(photos["chelsea"])

    say("predictions")
    preds = lm.predict(list(photos.values()), top_k=5)
    predictions = [{"name": f"skimage.data.{n}()", "thumb": _thumb(img), "predictions": [c.to_dict() for c in p.predictions]}
                   for (n, img), p in zip(photos.items(), preds)]

    say("journey")
    j = journey(lm, [photos["chelsea"]], channels="0-15")
    j.image_names = ["skimage.data.chelsea()"]
    grids = [{"layer": n, "type": j.types[n], "output_shape": j.shapes[n], "figure": data_uri(j.figure(n))}
             for n in j.layers]

    say("layer table")
    table = lm.layers()
    html = render(
        "demo.html", model_name=lm.name, params=table.total_params, input_size=lm.config.input_size,
        kernels=kernels, arithmetic=arithmetic, predictions=predictions, journey=grids,
        journey_image="skimage.data.chelsea()", layers=table.to_list(), **base_context(),
    )
    return write_html(Path(out_dir) / "index.html", html)


# --------------------------------------------------------------------------- images explained and runs


def explained_report(images: Sequence[Any], out_dir: str | os.PathLike, model: Any = "effnet-lite0", *,
                     methods: str | Sequence[str] = ("gradcam",), layer: str | None = None, top_k: int = 5,
                     names: Sequence[str] | None = None,
                     progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/index.html``: top-k predictions and CAM overlays (top class) per image.

    ``images``: paths or PIL images; ``methods``: CAM (or pixel attribution) methods,
    one overlay each, all computed in one batch per method.

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
            ov = ex.overlay(i, 0)
            ov.thumbnail((720, 720))
            cams[i].append({"method": m, "layer": ex.layer if ex.layer != "input" else None,
                            "target": ex.title(i, 0), "overlay": data_uri(ov, "JPEG")})
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


def report(images: Sequence[Any] | None = None, *, run: str | os.PathLike | None = None,
           out: str | os.PathLike = "report", model: Any = "effnet-lite0", demo: bool = False,
           **kwargs: Any) -> Path:
    """One self-contained HTML report: images explained, a training run, or the demo tour.

    >>> import convlens as cl                                         # doctest: +SKIP
    >>> cl.report(["cat.jpg", "dog.jpg"], out="report/")             # predictions and CAMs
    >>> cl.report(run="runs/faces", out="report/")                   # a training run
    """
    chosen = sum([bool(images), run is not None, bool(demo)])
    if chosen != 1:
        raise SpecError("report: give images, or run=RUN_DIR, or demo=True (exactly one)")
    if demo:
        return demo_report(out, model, **kwargs)
    if run is not None:
        if not (Path(run) / "config.json").is_file():
            raise RunError(f"run {run}: not a run directory (no config.json)", param="run")
        return run_report(run, out, **kwargs)
    return explained_report(list(images), out, model, **kwargs)


make_callable(__name__, report)
