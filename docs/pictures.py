"""Render every figure of convlens at the course's three input sizes, to look at them.

    .venv/bin/python docs/pictures.py [--out /tmp/pictures] [--sizes 28,64x60,224] [--only journey,explain]

Sizes and models (the data come from ``../shared/data``; a size whose data are absent is skipped
with a line saying so):

- ``28``: a small valid-padded CNN (``conv16v-pool-conv32v-pool-fc64``) and a dense net (``fc64``)
  trained for two epochs on 3,000 MNIST test digits;
- ``64x60``: a two-block CNN on the CMU faces (64x60, sunglasses or not: two classes);
- ``224``: the built-in model on photos (the cat photo is not square: its centre crop shows).

The trained runs are kept under ``OUT/runs`` and reused. Every picture is written under
``OUT/<size>/``: the journey (one layer, every layer, images x layers, the same layer for
several images), CAM overlays (the grid with its colour bar, an overlay, the raw heatmap PNG),
activation maximization (channels and classes), filters, dataset examples, the kernels lab,
and for the trained runs the confusion matrix and top losses. ``--docs`` also writes the two
screenshots of the docs (``docs/journey-28.png``, ``docs/featurevis-64x60.png``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import convlens as cl  # noqa: E402
from convlens.data.sources import load_source  # noqa: E402
from convlens.lens.examples import dataset_examples  # noqa: E402
from convlens.lens.filters import filters  # noqa: E402
from convlens.models.run import Run  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SIZES = ("28", "64x60", "224")
FIGURES = ("journey", "explain", "featurevis", "filters", "examples", "kernels", "evaluate")


def _run(path: Path, data, arch: str, epochs: int, **kw) -> Run:
    if (path / "config.json").is_file():
        return Run.load(path)
    return cl.train(data, arch=arch, epochs=epochs, out=str(path), force=True, progress=False, seed=0, **kw)


def setup(size: str, runs: Path):
    """(model, images (arrays or paths), names, [runs to evaluate]) for one size, or None."""
    if size == "28":
        if not (DATA / "mnist").is_dir():
            return None
        ds = load_source(f"mnist:{DATA / 'mnist'}").subset(range(3000))
        conv = _run(runs / "mnist-conv", ds, "conv16v-pool-conv32v-pool-fc64", 2)
        dense = _run(runs / "mnist-dense", ds, "fc64", 2)
        images = [ds.images[i, 0].numpy() for i in (0, 1, 2, 3)]
        return conv.model(), images, [f"digit {int(ds.labels[i])}" for i in (0, 1, 2, 3)], [conv, dense]
    if size == "64x60":
        if not (DATA / "cmu_faces").is_dir():
            return None
        ds = load_source(f"cmu-faces:{DATA / 'cmu_faces'}", label="eyes", scale=2)
        run = _run(runs / "faces-eyes", ds, "conv16-pool-conv32-pool-fc32", 6)
        pick = [0, 40, 80, 120]
        images = [ds.images[i, 0].numpy() for i in pick]
        return run.model(), images, [Path(ds.ids[i]).stem for i in pick], [run]
    if size == "224":
        photos = DATA / "photos"
        if not photos.is_dir():
            return None
        names = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
        return cl.load_model(), [str(photos / n) for n in names], names, []
    raise SystemExit(f"unknown size {size!r}: use {', '.join(SIZES)}")


def render(size: str, out: Path, runs: Path, only: set[str]) -> list[Path]:
    got = setup(size, runs)
    if got is None:
        print(f"{size}: its data are not in {DATA}; skipped")
        return []
    model, images, names, trained = got
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def put(name: str, img) -> None:
        if img is None:
            return
        p = out / f"{name}.png"
        img.save(p)
        written.append(p)
        print(f"  {p.relative_to(out.parent)}  {img.width}x{img.height}")

    convs = [r.name for r in model.layers() if r.is_conv and r.is_leaf]
    if "journey" in only:
        one = cl.journey(model, images[0])
        put("journey_overview", one.figure())
        put("journey_layer", one.figure(one.layers[0]))
        many = cl.journey(model, images)
        put("journey_across", many.figure())
        put("journey_compare", many.figure(many.layers[-1]))
    if "explain" in only:
        ex = cl.explain(model, images[:2], method="gradcam,gradcam++", target="top2")
        put("explain_grid", ex.figure(0))
        saved = ex.save(out / "explain")
        rec = saved.records[0]
        put("explain_overlay", _open(rec["overlay"]))
        put("explain_heatmap", _open(saved["heatmap_png"][0]))
    if "featurevis" in only:
        vis = cl.visualize(model, convs[-1], channels="0-7", steps=96)
        put("featurevis_channels", vis.figure())
        cls = cl.visualize(model, objective="class", classes=list(range(min(6, len(model.class_names)))), steps=96)
        put("featurevis_classes", cls.figure())
    if "filters" in only:
        put("filters_first", filters(model, convs[0]).figure())
        if len(convs) > 1:
            put("filters_second", filters(model, convs[1]).figure())
    if "examples" in only:
        pool = images if size == "224" else images * 3
        put("examples", dataset_examples(model, convs[0], "0-3", pool, n=4).figure())
    if "kernels" in only:
        put("kernels_one", cl.kernels.apply_kernel(images[0], "sobel-x", pool="max").figure())
        put("kernels_gallery", cl.kernels.apply_kernels(images[0], ["sobel-x", "sobel-y", "sharpen"]).figure())
    if "evaluate" in only:
        for run in trained:
            ev = cl.evaluate(run)
            tag = Path(run.path).name
            put(f"confusion_{tag}", ev.confusion_figure())
            put(f"top_losses_{tag}", ev.top_losses_figure())
    return written


def _open(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/pictures")
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--only", default=",".join(FIGURES), help=f"some of {', '.join(FIGURES)}")
    ap.add_argument("--docs", action="store_true", help="also write docs/journey-28.png and docs/featurevis-64x60.png")
    args = ap.parse_args(argv)
    out = Path(args.out)
    runs = out / "runs"
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(FIGURES):
        raise SystemExit(f"--only: unknown {', '.join(sorted(only - set(FIGURES)))}; use {', '.join(FIGURES)}")
    t0 = time.perf_counter()
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        print(f"{size}:")
        written = render(size, out / size, runs, only)
        if args.docs:
            for p in written:
                if (size, p.name) == ("28", "journey_overview.png"):
                    shutil.copyfile(p, ROOT / "docs" / "journey-28.png")
                if (size, p.name) == ("64x60", "featurevis_channels.png"):
                    shutil.copyfile(p, ROOT / "docs" / "featurevis-64x60.png")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
