"""Self-contained HTML reports.  ``demo_report`` is the built-in tour (``convlens demo``).

Everything the demo shows is computed from what ships in packages (the built-in
model, scikit-image's sample photos), so it works offline and without
``../shared``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .html import data_uri, render, write_html

#: scikit-image sample photos used by the demo (name -> loader name in skimage.data)
DEMO_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
DEMO_KERNELS = ("vertical-edge", "horizontal-edge", "sobel-x", "laplacian", "sharpen", "gaussian-blur", "emboss")


def sample_photos(names: Sequence[str] = DEMO_PHOTOS) -> dict[str, Image.Image]:
    """scikit-image's bundled sample photos as PIL images (offline)."""
    from skimage import data

    return {n: Image.fromarray(np.asarray(getattr(data, n)())) for n in names}


def _now() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def _thumb(img: Image.Image, size: int = 480) -> str:
    t = img.convert("RGB").copy()
    t.thumbnail((size, size))
    return data_uri(t, "JPEG")


def base_context() -> dict[str, Any]:
    from .. import __version__

    return {"version": __version__, "generated": _now()}


def kernels_section(image: Image.Image, kernels: Sequence[str] = DEMO_KERNELS) -> tuple[list[dict[str, Any]], list[str]]:
    """Figures of named kernels on ``image`` plus the 9x9 -> 7x7 -> 5x5 -> 3x3 arithmetic."""
    from .. import kernels as lab

    small = image.convert("L").copy()
    small.thumbnail((256, 256))
    out = []
    for name in kernels:
        r = lab.apply_kernel(small, name)
        out.append({"name": name, "figure": data_uri(r.figure()), "arithmetic": r.to_dict()["arithmetic"]})
    pooled = lab.apply_kernel(small, "sobel-x", stride=1, padding="same", pool="max", pool_size=2)
    out.append({"name": "sobel-x, same padding, then 2x2 max pooling", "figure": data_uri(pooled.figure()),
                "arithmetic": pooled.to_dict()["arithmetic"]})
    tiny = lab.apply_kernel(lab.demo_image(9), "vertical-edge", repeat=3)
    out.append({"name": "a 9x9 image through a 3x3 kernel, three times", "figure": data_uri(tiny.figure()),
                "arithmetic": tiny.to_dict()["arithmetic"]})
    return out, tiny.to_dict()["arithmetic"]


def demo_report(out_dir: str | os.PathLike, model: Any = "effnet-lite0", *,
                progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/index.html``: kernels lab, predictions, journey, layer table."""
    from ..lens.journey import journey
    from ..models import LensModel, load_model

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
