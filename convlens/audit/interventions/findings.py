"""The verdicts: every candidate's and statistic's numbers and sentence; the findings are the
significant ones that hold an artifact (a region) or a statistic that differs between the classes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..maps import place
from .proposals import iou
from .significance import AFFECTED, CONFIDENCE, accuracy, columns, effect_numbers, holders, paired, rounded


@dataclass
class Verdict:
    """One tested hypothesis (region or statistic) with its numbers; a finding when ``found``."""

    klass: int
    region: Any
    found: bool
    numbers: dict[str, Any]
    why: str
    clusters: list[int]
    test: tuple[str, int]

    def finding(self, names: Sequence[str]) -> dict[str, Any]:
        """The ``--json`` shape of a finding: ``effect`` and ``control`` are the share of the class's
        predictions changed (``measure`` "flip rate") or, when that alone does not show it, the mean drop
        in the class's probability ("probability drop"); ``ci`` the 95% interval of their difference;
        ``replace`` how the region was replaced (None for a statistic); ``object_effect`` the same measure
        when each image's object is replaced instead (None where no image's map gave one)."""
        n = self.numbers
        flips = n["measure"] == "flip rate"
        return {"class": names[self.klass] if 0 <= self.klass < len(names) else f"class {self.klass}",
                "region": self.region, "measure": n["measure"], "effect": n["effect"] if flips else n["drop"],
                "control": n["control"] if flips else n["control_drop"], "ci": n["ci"] if flips else n["drop_ci"],
                "constant_content": n.get("constant_content"), "accuracy_without": n.get("accuracy_without"),
                "why": self.why, "replace": n.get("replace"),
                "object_effect": n.get("object_effect") if flips else n.get("object_drop")}


#: how each replacement reads in a finding's sentence
REPLACED = {"mean": "filled with the data's mean colour", "blur": "blurred", "inpaint": "inpainted (ROAD)"}


def class_name(names: Sequence[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else f"class {c}"


def flipped_to(t: dict[str, np.ndarray], rows: np.ndarray, c: int, names: Sequence[str]) -> str:
    after = t["pred_after"][rows]
    flipped = after[(t["pred_before"][rows] == c) & (after != c)]
    if not len(flipped):
        return ""
    v, n = np.unique(flipped, return_counts=True)
    return f" to '{class_name(names, int(v[np.argmax(n)]))}'"


def verdicts(table: pa.Table, the_plan: dict[str, Any], names: Sequence[str]) -> list[Verdict]:
    """Every candidate's and statistic's verdict (see the module doc); findings are those with ``found``."""
    if table.num_rows == 0:
        return []
    t = columns(table)
    content = table.column("content").to_pylist()
    out: list[Verdict] = []
    seed = int(the_plan.get("seed", 0))
    for k, cand in enumerate(the_plan["candidates"]):
        c = int(cand["klass"])
        reg = t["kind"] == "region"
        sel = reg & (t["test"] == k) & (t["klass"] == c)
        csel = (t["kind"] == "control") & (t["test"] == k)
        rows = np.flatnonzero(sel)
        if not len(rows):
            continue
        if not csel.any():  # no effect at all: no control was run (see NO_EFFECT)
            out.append(_no_effect(t, k, cand, rows, names, the_plan))
            continue
        held, spread = holders(np.asarray([content[r] for r in rows], np.float64))
        share = float(held.mean())
        if held.any():  # the images that hold the same pixels there: the effect is measured on them
            sel = np.zeros_like(sel)
            sel[rows[held]] = True
        p = paired(t, sel, csel, c)
        if p is None:
            continue
        out.append(_region_verdict(t, content, k, the_plan, p, names, share, spread))
    for s, name in enumerate(the_plan["statistics"]):
        for c in sorted(set(int(v) for v in t["klass"][(t["kind"] == "global") & (t["test"] == s)])):
            sel = (t["kind"] == "global") & (t["test"] == s) & (t["klass"] == c)
            csel = (t["kind"] == "mirror") & (t["test"] == s) & (t["klass"] == c)
            if not csel.any():
                rows = np.flatnonzero(sel)
                flip = float(((t["pred_before"][rows] == c) & (t["pred_after"][rows] != c)).mean())
                drop = float((t["prob_before"][rows] - t["prob_after"][rows]).mean())
                out.append(Verdict(c, f"global:{name}", False, {
                    "measure": "flip rate", "effect": rounded(flip), "control": None, "ci": None, "drop": rounded(drop),
                    "control_drop": None, "drop_ci": None, "images": int(len(rows)), "significant": False,
                    "constant_content": None, "statistic": name},
                    f"not relied on: normalising {name} per image changes {100 * flip:.0f}% of "
                    f"'{class_name(names, c)}' predictions and lowers its probability by {drop:.2f} "
                    f"({len(rows)} images): "
                    "too little to need a control", [], ("global", s)))
                continue
            p = paired(t, sel, csel, c)
            if p is None:
                continue
            out.append(_global_verdict(t, s, name, c, p, names, seed))
    return merge(out)


def merge(verdicts: list[Verdict]) -> list[Verdict]:
    """Overlapping region findings of one class are one finding: the one with the largest drop stays,
    the others stand down (their clusters join it)."""
    found = sorted((v for v in verdicts if v.found and v.test[0] == "region"), key=lambda v: -v.numbers["drop"])
    kept: list[Verdict] = []
    for v in found:
        same = next((u for u in kept if u.klass == v.klass and iou(u.region, v.region) > 0), None)
        if same is None:
            kept.append(v)
            continue
        v.found = False
        v.why = f"the same evidence as the finding at {', '.join(f'{x:.2f}' for x in same.region)}: {v.why}"
        same.clusters = sorted(set(same.clusters) | set(v.clusters))
    return verdicts


def object_numbers(t: dict[str, np.ndarray], k: int, c: int, rows: np.ndarray, boxes: dict[str, Any]
                   ) -> dict[str, Any]:
    """The object control of candidate ``k`` on the images of ``rows`` (those the effect is measured on):
    the flip rate and probability drop of class ``c`` when each image's object (``boxes``, by audit
    index) is replaced instead of the region, how many images had one and their mean area."""
    sel = (t["kind"] == "object") & (t["test"] == k) & np.isin(t["index"], t["index"][rows])
    if not sel.any():
        return {"object_effect": None, "object_drop": None, "object_images": 0, "object_area": None}
    idx = [str(int(i)) for i in t["index"][sel]]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (boxes.get(i) for i in idx) if b is not None]
    return {"object_effect": rounded(float(((t["pred_before"][sel] == c) & (t["pred_after"][sel] != c)).mean())),
            "object_drop": rounded(float((t["prob_before"][sel] - t["prob_after"][sel]).mean())),
            "object_images": int(sel.sum()), "object_area": rounded(float(np.mean(areas))) if areas else None}


def _object_words(nums: dict[str, Any], name: str, planned: bool) -> str:
    if nums["object_effect"] is None:
        return ("; no object to mask (these images' maps are empty or point only at the region)" if planned
                else "")
    where = "" if nums["object_area"] is None else f", {100 * nums['object_area']:.0f}% of the input on average"
    return (f"; masking each image's object instead (where else its map points: its main blob outside the region"
            f"{where}; {nums['object_images']} images) changes {100 * nums['object_effect']:.0f}% of '{name}' "
            f"predictions and lowers its probability by {nums['object_drop']:.2f}")


def _region_verdict(t: dict[str, np.ndarray], content: list[Any], k: int, the_plan: dict[str, Any],
                    p: dict[str, Any], names: Sequence[str], share: float, spread: float) -> Verdict:
    cand = the_plan["candidates"][k]
    c, box = int(cand["klass"]), [float(v) for v in cand["box"]]
    how = the_plan.get("replace", "mean")
    nums = effect_numbers(p, int(the_plan.get("seed", 0)) + 17 * k)
    rows = p["rows"]
    hit = rows[p["drop"] >= AFFECTED]
    ctrl_rows = np.flatnonzero((t["kind"] == "control") & (t["test"] == k))
    cvec = np.asarray([content[r] for r in ctrl_rows if content[r] is not None], np.float64)
    cspread = float(cvec.std(axis=0).mean()) if len(cvec) > 1 else None
    constant = share > 0
    before, without = accuracy(t, (t["kind"] == "region") & (t["test"] == k))
    others = (t["kind"] == "region") & (t["test"] == k) & (t["klass"] != c)
    others_changed = float((t["pred_before"][others] != t["pred_after"][others]).mean()) if others.any() else None
    # each control place's flip rate: the control's distribution
    ctl_dist, ctl_drops = [], []
    for q in sorted(set(t["position"][ctrl_rows].tolist())):
        r = ctrl_rows[t["position"][ctrl_rows] == q]
        ctl_dist.append(rounded(float(((t["pred_before"][r] == c) & (t["pred_after"][r] != c)).mean())))
        ctl_drops.append(rounded(float((t["prob_before"][r] - t["prob_after"][r]).mean())))
    nums.update({"constant_content": bool(constant), "content_spread": rounded(spread), "control_content_spread":
                 rounded(cspread), "accuracy_before": rounded(before), "accuracy_without": rounded(without),
                 "others_changed": rounded(others_changed), "control_distribution": ctl_dist,
                 "control_drops": ctl_drops, "source": cand["source"],
                 "affected": int(len(hit)), "holders": rounded(share), "replace": how})
    objects = the_plan.get("objects")
    nums.update(object_numbers(t, k, c, rows, objects[k] if objects and k < len(objects) else {}))
    found = nums["significant"] and constant
    name = class_name(names, c)
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    size = f"{100 * (box[2] - box[0]):.0f}% x {100 * (box[3] - box[1]):.0f}%"
    what = (f"masking a region of {size} of the input at {place(x, y)} ({', '.join(f'{v:.2f}' for v in box)}; "
            f"{REPLACED.get(how, how)}) changes {100 * nums['effect']:.0f}% of '{name}' predictions"
            f"{flipped_to(t, rows, c, names)} and lowers its probability by {nums['drop']:.2f} on average "
            f"(random regions of that size: {100 * nums['control']:.1f}% "
            f"changed, {nums['control_drop']:.2f} lower; {100 * CONFIDENCE:.0f}% CI of the difference "
            f"{100 * nums['ci'][0]:.0f}% to {100 * nums['ci'][1]:.0f}%, of the drop {nums['drop_ci'][0]:.2f} to "
            f"{nums['drop_ci'][1]:.2f}; {nums['images']} images)")
    what += _object_words(nums, name, objects is not None)
    if others_changed is not None:
        what += f"; on the other classes' images it changes {100 * others_changed:.0f}% of predictions"
    if without is not None:
        what += f"; accuracy with the region masked: {100 * without:.0f}% (before: {100 * before:.0f}%)"
    content_words = (f"{100 * share:.0f}% of the '{name}' images hold nearly the same pixels there "
                     f"(spread {spread:.3f}; "
                     f"random regions {cspread if cspread is None else round(cspread, 3)}): a mark, patch or "
                     "watermark, and the numbers are on those images" if constant else
                     f"its pixels vary between images (spread {spread:.3f}): the object itself")
    if found:
        why = f"shortcut: {what}; {content_words}"
    elif nums["significant"]:
        why = f"the model uses this region, but {content_words}, so it is no shortcut: {what}"
    else:
        why = f"not a shortcut: {what}"
    return Verdict(c, [rounded(v) for v in box], found, nums, why, list(cand["clusters"]), ("region", k))


def _no_effect(t: dict[str, np.ndarray], k: int, cand: dict[str, Any], rows: np.ndarray, names: Sequence[str],
               the_plan: dict[str, Any]) -> Verdict:
    how = the_plan.get("replace", "mean")
    c, box = int(cand["klass"]), [float(v) for v in cand["box"]]
    flip = float(((t["pred_before"][rows] == c) & (t["pred_after"][rows] != c)).mean())
    drop = float((t["prob_before"][rows] - t["prob_after"][rows]).mean())
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    nums = {"measure": "flip rate", "effect": rounded(flip), "control": None, "ci": None, "drop": rounded(drop),
            "control_drop": None, "drop_ci": None, "images": int(len(rows)), "significant": False,
            "constant_content": None, "source": cand["source"], "replace": how}
    why = (f"not a shortcut: masking the region at {place(x, y)} ({', '.join(f'{v:.2f}' for v in box)}; "
           f"{REPLACED.get(how, how)}) changes {100 * flip:.0f}% of '{class_name(names, c)}' predictions and lowers "
           f"its probability by {drop:.2f} on average ({len(rows)} images): too little to need a control")
    return Verdict(c, [rounded(v) for v in box], False, nums, why, list(cand["clusters"]), ("region", k))


def _global_verdict(t: dict[str, np.ndarray], s: int, name: str, c: int, p: dict[str, Any], names: Sequence[str],
                    seed: int) -> Verdict:
    nums = effect_numbers(p, seed + 1000 + 31 * s + c)
    g = (t["kind"] == "global") & (t["test"] == s)
    mine, rest = t["value"][g & (t["klass"] == c)], t["value"][g & (t["klass"] != c)]
    d = None
    if len(rest) > 1 and len(mine) > 1:
        pooled = math.sqrt((mine.var(ddof=1) + rest.var(ddof=1)) / 2)
        d = float((mine.mean() - rest.mean()) / pooled) if pooled > 0 else None
    before, without = accuracy(t, g)
    nums.update({"constant_content": None, "accuracy_before": rounded(before), "accuracy_without": rounded(without),
                 "class_value": rounded(float(mine.mean()) if len(mine) else None),
                 "others_value": rounded(float(rest.mean()) if len(rest) else None), "difference_d": rounded(d),
                 "statistic": name})
    cname = class_name(names, c)
    diff = (f"'{cname}' images have {name} {nums['class_value']:.3f} against {nums['others_value']:.3f} in the "
            f"others' (standardised difference {d:+.2f})" if d is not None else f"'{cname}' images' {name}")
    what = (f"normalising {name} per image changes {100 * nums['effect']:.0f}% of '{cname}' predictions"
            f"{flipped_to(t, p['rows'], c, names)} and lowers its probability by {nums['drop']:.2f} "
            f"(the same change in the "
            f"opposite direction: {100 * nums['control']:.1f}% changed, {nums['control_drop']:.2f} lower; "
            f"{100 * CONFIDENCE:.0f}% CI of the difference {100 * nums['ci'][0]:.0f}% to {100 * nums['ci'][1]:.0f}%; "
            f"{nums['images']} images)")
    if without is not None:
        what += f"; accuracy with {name} normalised: {100 * without:.0f}% (before: {100 * before:.0f}%)"
    found = nums["significant"] and d is not None and abs(d) >= 0.5
    if found:
        why = (f"a property of the data the model uses: {diff}; {what}. A confound unless {name} really tells "
               "the classes apart")
    else:
        why = f"not relied on: {diff}; {what}"
    return Verdict(c, f"global:{name}", found, nums, why, [], ("global", s))
