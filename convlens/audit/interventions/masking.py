"""The interventions themselves: a region replaced, a global statistic normalised, the predictions
before and after (batched forwards without gradients, the same function on both engines)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from ...models.lensmodel import LensModel
from .proposals import pixel_box
from .records import all_tests, schema

#: the pixels of a region kept per image for the content test: the box pooled to this side
CONTENT = 16
#: a region whose masking lowers the class's probability (mean) and flips its predictions by less than this
#: gets no control (it cannot be a finding; the control would cost ``CONTROLS`` forwards of the class's sample)
NO_EFFECT = 0.02
#: images per forward
BATCH = 64

BORDER_BAND = 0.125

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
    fill = raw.mean(dim=(0, 2, 3))
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
            x = raw.clone()
            content = pooled(raw[:, :, y0:y1, x0:x1])
            x[:, :, y0:y1, x0:x1] = fill.view(1, -1, 1, 1)
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
                x = raw[own].clone()
                content = pooled(x[:, :, py:py + bh, px:px + bw]) if p == 0 else None  # one place: the reference
                x[:, :, py:py + bh, px:px + bw] = fill.view(1, -1, 1, 1)
                emit("control", k, p, own, [c] * len(own), forward(x), None, content)
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
