"""What the audit page shows of a finding (issue 29: the evidence, not just the verdict): its numbers,
the control's distribution as a strip (each random place, the region, each image's object), and a
few of the class's images as the model saw them: before, with the region replaced, with the same
box replaced at the control's first random place, and with the image's object replaced, each with
the prediction measured on it (the rows of ``interventions.parquet``).

The pictures are drawn with the replacement the audit used (:func:`~convlens.audit.interventions.replaced`,
the plan's ``replace``, ``fill`` and seeds) on the image as the page shows it; the predictions are
the measured ones.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..render.html import data_uri
from . import interventions as iv

#: the finding's images shown, those whose class's probability dropped most first
EXAMPLES = 4
#: outline colours: the region (red), the control's place (grey), the object (blue)
RED, GREY, BLUE = (230, 30, 30), (110, 110, 110), (40, 90, 220)
#: the numbers the page lists (those the finding has)
NUMBERS = ("replace", "effect", "control", "ci", "drop", "control_drop", "drop_ci", "object_effect", "object_drop",
           "object_images", "object_area", "accuracy_before", "accuracy_without", "images")


def control_strip(control: Sequence[float | None], effect: float, object_effect: float | None = None,
                  measure: str = "flip rate", region: bool = True, width: int = 420, height: int = 86) -> Image.Image:
    """The control's distribution on a 0..1 axis (grey dots above it, stacked where they coincide: each
    random place's rate, or for a statistic, not a ``region``, the opposite change's) with the
    intervention's own (a red bar above the axis) and the object control's (a blue bar below it), in
    ``measure`` (the share of the class's predictions changed, or its mean probability drop)."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, y = 14, width - 24, 52
    x = lambda v: left + (right - left) * min(1.0, max(0.0, float(v)))  # noqa: E731
    flips = measure == "flip rate"
    d.line((left, y, right, y), fill=(150, 150, 150))
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        d.line((x(v), y - 3, x(v), y + 3), fill=(150, 150, 150))
        d.text((x(v) - 10, y + 20), f"{100 * v:.0f}%" if flips else f"{v:.2f}", fill=(90, 90, 90))
    d.rectangle((x(effect) - 2, y - 30, x(effect) + 2, y), fill=(200, 40, 40))
    seen: dict[int, int] = {}
    for v in control:
        if v is not None:
            at = round(x(v))
            up = 9 * seen.get(at // 6, 0)  # dots that would overlap stack upwards
            seen[at // 6] = seen.get(at // 6, 0) + 1
            d.ellipse((at - 4, y - 12 - up, at + 4, y - 4 - up), fill=(120, 120, 120))
    if object_effect is not None:
        d.rectangle((x(object_effect) - 2, y + 1, x(object_effect) + 2, y + 16), fill=BLUE)
    what = "predictions changed" if flips else "probability drop"
    legend = "grey: random places, red: the region, blue: the object" if region else \
        "grey: the opposite change, red: the statistic normalised"
    d.text((left, 2), f"{what}; {legend}", fill=(60, 60, 60))
    return img


def _to_tensor(img: Image.Image, channels: int) -> torch.Tensor:
    a = torch.as_tensor(np.asarray(img.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)
    return a.mean(dim=0, keepdim=True) if channels == 1 else a


def _to_image(t: torch.Tensor) -> Image.Image:
    a = (t.clamp(0, 1) * 255).round().byte()
    if a.shape[0] == 1:
        a = a.expand(3, -1, -1)
    return Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB")


def _outlined(img: Image.Image, box: Sequence[int], colour: tuple[int, int, int]) -> Image.Image:
    out = img.copy()
    x0, y0, x1, y1 = box
    ImageDraw.Draw(out).rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour)
    return out


def _panel(x: torch.Tensor, box: Sequence[int], how: str, fill: torch.Tensor, seed: int, colour: tuple[int, int, int],
           caption: str, scale: Callable[[Image.Image], Image.Image]) -> dict[str, Any]:
    """One picture: the image ``x`` ``(C, H, W)`` with ``box`` replaced as the audit did, outlined."""
    shown = _to_image(iv.replaced(x[None], tuple(int(v) for v in box), how, fill, seed)[0])
    return {"src": data_uri(scale(_outlined(shown, box, colour)), "PNG"), "caption": caption}


def evidence(v: iv.Verdict, names: Sequence[str], the_plan: dict[str, Any] | None, table: Any,
             picture: Callable[[int], Image.Image | None], scale: Callable[[Image.Image], Image.Image]
             ) -> dict[str, Any]:
    """The page's block for the finding ``v``: ``class``, ``region``, ``why``, ``numbers``, ``control``
    (the strip, a data URI) and, for a region, ``examples`` (each a list of panels ``{src, caption}``).
    ``picture(index)``: the image of an audit index as the model saw it (None when it cannot be read);
    ``scale``: how the page enlarges a picture."""
    n = v.numbers
    flips = n["measure"] == "flip rate"
    dist = n.get("control_distribution" if flips else "control_drops") or [n["control" if flips else "control_drop"]]
    strip = control_strip(dist, n["effect" if flips else "drop"], n.get("object_effect" if flips else "object_drop"),
                          n["measure"], v.test[0] == "region")
    out: dict[str, Any] = {"class": iv.class_name(names, v.klass), "region": v.region, "why": v.why,
                           "measure": n["measure"], "control": data_uri(strip), "examples": [],
                           "numbers": {k: n[k] for k in NUMBERS if n.get(k) is not None}}
    if v.test[0] != "region" or table is None or the_plan is None:
        return out
    k = v.test[1]
    cand = the_plan["candidates"][k]
    how = the_plan.get("replace", "mean")
    every = the_plan.get("objects") or []
    objects = every[k] if k < len(every) else {}
    t = iv.columns(table)
    mine = (t["test"] == k) & (t["klass"] == v.klass)
    rows = np.flatnonzero(mine & (t["kind"] == "region"))
    rows = rows[np.argsort(-(t["prob_before"][rows] - t["prob_after"][rows]), kind="stable")]
    by_kind = {kind: {int(t["index"][r]): r for r in np.flatnonzero(mine & (t["kind"] == kind) & (t["position"] == at))}
               for kind, at in (("control", 0), ("object", -1))}
    cname = lambda i: iv.class_name(names, int(i))  # noqa: E731

    def said(r: int, what: str) -> str:
        return f"{what}: {cname(t['pred_after'][r])} ({t['prob_after'][r]:.2f} for the class)"

    for r in rows:
        if len(out["examples"]) >= EXAMPLES:
            break
        index = int(t["index"][r])
        img = picture(index)
        if img is None:
            continue
        w, h = img.size
        x = _to_tensor(img, len(the_plan.get("fill") or [0, 0, 0]))
        fill = torch.as_tensor(the_plan.get("fill") or x.mean(dim=(1, 2)).tolist(), dtype=torch.float32)
        box = iv.pixel_box(cand["box"], h, w)

        seed = lambda at: iv.seed_of(the_plan, k, at)  # noqa: E731
        panels = [{"src": data_uri(scale(_outlined(img, box, RED)), "PNG"),
                   "caption": f"before: {cname(t['pred_before'][r])} ({t['prob_before'][r]:.2f})"},
                  _panel(x, box, how, fill, seed(-1), RED, said(r, "region masked"), scale)]
        c = by_kind["control"].get(index)
        if c is not None and the_plan["controls"][k]:
            px, py = the_plan["controls"][k][0]
            place = (px, py, px + box[2] - box[0], py + box[3] - box[1])
            panels.append(_panel(x, place, how, fill, seed(0), GREY, said(c, "random place masked"), scale))
        o = by_kind["object"].get(index)
        if o is not None and str(index) in objects:
            panels.append(_panel(x, iv.pixel_box(objects[str(index)], h, w), how, fill, seed(-2), BLUE,
                                 said(o, "object masked"), scale))
        out["examples"].append(panels)
    return out
