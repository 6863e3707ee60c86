"""The interventions themselves: a region replaced, a global statistic normalised, the predictions
before and after (batched forwards without gradients, the same function on both engines).

A region is replaced (:func:`replaced`, the plan's ``replace``) by the data's mean colour (``mean``),
by a strong Gaussian blur of the image (``blur``: what was there is smeared into its surroundings), or
by ROAD's noisy linear inpainting (``inpaint``, :func:`convlens.lens.imputation.impute`: the region
solved from its border, so no flat patch of a colour the data never shows).  The candidate's region,
its controls (the same box at random places) and each image's object (the box of its map's main blob
outside the region) are all replaced the same way.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from ...errors import SpecError
from ...lens.imputation import impute
from ...models.lensmodel import LensModel
from ...options import REPLACEMENTS
from .proposals import pixel_box
from .records import all_tests, schema

#: the pixels of a region kept per image for the content test: the box pooled to this side
CONTENT = 16
#: a region whose masking lowers the class's probability (mean) and flips its predictions by less than this
#: gets no control (it cannot be a finding; the control would cost ``CONTROLS`` forwards of the class's sample)
NO_EFFECT = 0.02
#: images per forward (and per inpainting solve)
BATCH = 64
BORDER_BAND = 0.125
#: the blur's standard deviation in multiples of the box's longer side: at 2, about a tenth of what a
#: patch in a corner holds stays in its box, the rest comes from around it
BLUR = 2.0
#: the standard deviation of the noise ROAD's inpainting adds to the imputed pixels (0..1)
INPAINT_NOISE = 0.01

Box = Sequence[int]


def _gauss(lo: int, hi: int, n: int, sigma: float) -> torch.Tensor:
    """``(hi - lo, n)``: rows ``lo..hi`` of a Gaussian blur along an axis of ``n`` pixels, each row
    normalised over the pixels in the image (no padding to invent)."""
    d = torch.arange(lo, hi, dtype=torch.float32)[:, None] - torch.arange(n, dtype=torch.float32)[None, :]
    k = torch.exp(-0.5 * (d / sigma) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def blurred(raw: torch.Tensor, box: Box) -> torch.Tensor:
    """The pixel ``box`` of every image of ``raw`` ``(N, C, H, W)`` under a Gaussian blur of standard
    deviation ``BLUR`` times the box's longer side, ``(N, C, bh, bw)`` (separable: two small products)."""
    x0, y0, x1, y1 = box
    h, w = raw.shape[-2:]
    sigma = BLUR * max(x1 - x0, y1 - y0)
    return _gauss(y0, y1, h, sigma) @ raw @ _gauss(x0, x1, w, sigma).T


def _removed(boxes: Sequence[Box], h: int, w: int) -> torch.Tensor:
    m = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        m[j, y0:y1, x0:x1] = True
    return m


def replaced(raw: torch.Tensor, boxes: Box | Sequence[Box], how: str, fill: torch.Tensor, seed: int = 0
             ) -> torch.Tensor:
    """A copy of the images ``raw`` ``(N, C, H, W)`` (0..1) with a pixel box ``(x0, y0, x1, y1)`` of each
    replaced: ``boxes`` one box for all or one per image; ``how`` one of ``REPLACEMENTS`` (the module
    doc): ``mean`` fills it with ``fill`` (``(C,)``), ``blur`` with :func:`blurred`, ``inpaint`` with
    ROAD's imputation (its noise drawn from ``seed``)."""
    if how not in REPLACEMENTS:
        raise SpecError(f"replace must be {', '.join(REPLACEMENTS[:-1])} or {REPLACEMENTS[-1]} (got {how!r})",
                        param="replace")
    out = raw.clone()
    n, h, w = len(raw), raw.shape[-2], raw.shape[-1]
    one = len(boxes) == 4 and all(isinstance(v, int) for v in boxes)
    each: list[Box] = [boxes] * n if one else list(boxes)  # type: ignore[list-item]
    if not n:
        return out
    if how == "inpaint":
        gen = torch.Generator().manual_seed(int(seed))
        for s in range(0, n, BATCH):
            part = raw[s:s + BATCH]
            if one:  # one mask: the images are its channels, a single solve
                filled = impute(part.reshape(1, -1, h, w), _removed([each[0]], h, w), noise=INPAINT_NOISE,
                                generator=gen).reshape(part.shape)
            else:
                filled = impute(part, _removed(each[s:s + BATCH], h, w), noise=INPAINT_NOISE, generator=gen)
            for j, (x0, y0, x1, y1) in enumerate(each[s:s + BATCH]):
                out[s + j, :, y0:y1, x0:x1] = filled[j, :, y0:y1, x0:x1].clamp(0, 1)
        return out
    if one:
        x0, y0, x1, y1 = each[0]
        out[:, :, y0:y1, x0:x1] = fill.view(1, -1, 1, 1) if how == "mean" else blurred(raw, each[0])
        return out
    for j, (x0, y0, x1, y1) in enumerate(each):
        out[j, :, y0:y1, x0:x1] = fill.view(-1, 1, 1) if how == "mean" else blurred(raw[j:j + 1], each[j])[0]
    return out


def seed_of(the_plan: dict[str, Any], test: int, position: int) -> int:
    """The seed of one intervention's random draws (the inpainting's noise): the plan's seed, the test
    and the place (``-1`` the region, ``-2`` the objects, ``0..`` the controls), whatever engine runs it."""
    return int(the_plan.get("seed", 0)) * 1_000_003 + 7919 * int(test) + 31 * (int(position) + 3)


# -- the interventions ---------------------------------------------------------------------------

def pooled(region: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(region, (CONTENT, CONTENT)).reshape(region.shape[0], -1)


def _stat(x: torch.Tensor, name: str) -> torch.Tensor:
    """The statistic ``name`` of each raw image ``(N, C, H, W)`` in 0..1."""
    if name == "brightness":
        return x.mean(dim=(1, 2, 3))
    if name == "contrast":
        return x.std(dim=(1, 2, 3))
    if name == "border":
        return x[:, :, _band(x)].mean(dim=(1, 2))
    ch = ("red", "green", "blue").index(name.split(":")[1])
    return x[:, ch].mean(dim=(1, 2))


def _band(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    bh, bw = max(1, round(h * BORDER_BAND)), max(1, round(w * BORDER_BAND))
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:bh], m[-bh:], m[:, :bw], m[:, -bw:] = True, True, True, True
    return m


def _normalise(x: torch.Tensor, name: str, value: torch.Tensor, target: float, inverse: bool) -> torch.Tensor:
    """Each image's statistic moved to ``target`` (``inverse``: by the same factor or shift the other way)."""
    v = value.clamp_min(1e-4)
    if name == "border":
        shift = (target - value) * (-1 if inverse else 1)
        out = x.clone()
        band = _band(x)
        out[:, :, band] += shift.view(-1, 1, 1)
        return out.clamp(0, 1)
    f = (target / v).clamp(0.25, 4.0)
    f = 1 / f if inverse else f
    if name == "brightness":
        return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)
    if name == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (m + (x - m) * f.view(-1, 1, 1, 1)).clamp(0, 1)
    ch = ("red", "green", "blue").index(name.split(":")[1])
    out = x.clone()
    out[:, ch] = (x[:, ch] * f.view(-1, 1, 1)).clamp(0, 1)
    return out


def measure(lm: LensModel, images: torch.Tensor, index: Sequence[int], klass: Sequence[int],
            label: Sequence[int], the_plan: dict[str, Any], tests: Iterable[tuple[str, int]] | None = None,
            batch_size: int = BATCH) -> dict[str, list[Any]]:
    """The rows of :func:`schema` for ``images`` (the model's input tensors of the sampled items, in the
    order of ``index``) and the plan's ``tests`` (``("region", k)`` or ``("global", s)``; default all),
    as columns.  Forwards only, batched, no gradient."""
    prep = lm.config
    cols: dict[str, list[Any]] = {f.name: [] for f in schema()}
    index, klass, label = list(map(int, index)), list(map(int, klass)), list(map(int, label))
    pos = {i: j for j, i in enumerate(index)}
    device = lm.device
    raw = prep.denormalize(images.float())  # 0..1, on the CPU
    # the data's mean colour: the plan's (the same on every engine), else the sample's
    fill = torch.as_tensor(the_plan["fill"], dtype=raw.dtype) if the_plan.get("fill") else raw.mean(dim=(0, 2, 3))
    how = the_plan.get("replace", "mean")
    objects = the_plan.get("objects") or []
    h, w = raw.shape[-2:]

    def forward(batch_raw: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for s in range(0, len(batch_raw), batch_size):
                x = prep.normalize(batch_raw[s:s + batch_size]).to(device)
                out.append(torch.softmax(lm(x).float(), dim=1).cpu())
        return torch.cat(out) if out else torch.zeros(0, lm.num_classes)

    before = forward(raw)
    pred0 = before.argmax(dim=1)
    sample = {int(c): [pos[i] for i in v if i in pos] for c, v in the_plan["sample"].items()}
    everyone = list(range(len(index)))
    if tests is None:
        tests = all_tests(the_plan)

    def emit(kind: str, test: int, position: int, rows: list[int], target: Sequence[int], after: torch.Tensor,
             value: torch.Tensor | None, content: torch.Tensor | None, keep: torch.Tensor | None = None) -> None:
        pa_ = after.argmax(dim=1)
        for j, r in enumerate(rows):
            t = int(target[j])
            cols["kind"].append(kind)
            cols["test"].append(test)
            cols["position"].append(position)
            cols["index"].append(index[r])
            cols["klass"].append(klass[r])
            cols["label"].append(label[r])
            cols["target"].append(t)
            cols["pred_before"].append(int(pred0[r]))
            cols["prob_before"].append(float(before[r, t]))
            cols["pred_after"].append(int(pa_[j]))
            cols["prob_after"].append(float(after[j, t]))
            cols["value"].append(None if value is None else float(value[j]))
            cols["content"].append(None if content is None or (keep is not None and not keep[j])
                                   else content[j].tolist())

    for kind, k in tests:
        if kind == "region":
            cand = the_plan["candidates"][k]
            c = int(cand["klass"])
            x0, y0, x1, y1 = pixel_box(cand["box"], h, w)
            content = pooled(raw[:, :, y0:y1, x0:x1])
            x = replaced(raw, (x0, y0, x1, y1), how, fill, seed_of(the_plan, k, -1))
            keep = torch.as_tensor([klass[r] == c for r in everyone])  # the content of the class's images only
            after = forward(x)
            emit("region", k, -1, everyone, [c] * len(everyone), after, None, content, keep)
            own = sample.get(c, [])
            if not own:
                continue
            mine = torch.as_tensor(own)
            drop = (before[mine, c] - after[mine, c]).mean()
            flips = ((pred0[mine] == c) & (after[mine].argmax(dim=1) != c)).float().mean()
            if drop < NO_EFFECT and flips < NO_EFFECT:  # nothing to tell apart from a control: none run
                continue
            bw, bh = x1 - x0, y1 - y0
            for p, (px, py) in enumerate(the_plan["controls"][k]):
                # one place's pixels are the content test's reference
                content = pooled(raw[own][:, :, py:py + bh, px:px + bw]) if p == 0 else None
                x = replaced(raw[own], (px, py, px + bw, py + bh), how, fill, seed_of(the_plan, k, p))
                emit("control", k, p, own, [c] * len(own), forward(x), None, content)
            # the other control: each image's object (where else its map points), replaced the same way
            boxes = objects[k] if k < len(objects) else {}
            held = [r for r in own if str(index[r]) in boxes]
            if held:
                x = replaced(raw[held], [pixel_box(boxes[str(index[r])], h, w) for r in held], how, fill,
                             seed_of(the_plan, k, -2))
                emit("object", k, -1, held, [c] * len(held), forward(x), None, None)
        else:
            name = the_plan["statistics"][k]
            value = _stat(raw, name)
            # the target: the mean over classes of each class's mean statistic (balanced)
            per_class = [value[v].mean() for v in sample.values() if v]
            target = float(torch.stack(per_class).mean()) if per_class else float(value.mean())
            tgt = [klass[r] for r in everyone]
            after = forward(_normalise(raw, name, value, target, False))
            emit("global", k, -1, everyone, tgt, after, value, None)
            t_ = torch.as_tensor(tgt)
            drop = before.gather(1, t_[:, None])[:, 0] - after.gather(1, t_[:, None])[:, 0]
            flips = ((pred0 == t_) & (after.argmax(dim=1) != t_)).float()
            if all(float(drop[t_ == c].mean()) < NO_EFFECT and float(flips[t_ == c].mean()) < NO_EFFECT
                   for c in set(tgt)):
                continue  # no class minds it: no control to run (see NO_EFFECT)
            emit("mirror", k, -1, everyone, tgt, forward(_normalise(raw, name, value, target, True)), value, None)
    return cols
