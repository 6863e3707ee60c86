"""The audit's result: read from the shards class by class, clustered, judged, drawn.

:func:`summarise` reads the written shards (the scalar columns once, then each class's maps a
shard at a time; a large class is clustered on a bounded sample, see :mod:`convlens.audit.spray`,
so memory is bounded whatever the data set's size) and returns an :class:`Audit` view:
``to_dict()`` is the ``--json`` shape, ``figure()`` the class-by-strategy overview, ``save(dir)``
writes ``summary.json``, ``overview.png`` and the self-contained ``index.html``.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..errors import ConvlensError, SpecError
from ..images import load_image
from ..models.preprocess import Preprocess
from ..render.colors import colorize
from ..render.confusion import confusion_image
from ..render.files import OutDir, Saved
from ..render.grid import grid
from ..render.html import data_uri, render
from ..render.overlay import overlay
from ..view import View
from . import interventions as iv
from .evidence import evidence
from .inputs import resolve
from .maps import place
from .shards import ClassMaps, item_map, read_manifest, read_shards
from .spray import Cluster, summarise_class

#: example images shown per class and per cluster, and the least typical shown per class
EXAMPLES = 4
OUTLIERS = 4
#: the audit page's own styles (inlined in index.html; served by the web explorer as a stylesheet)
AUDIT_CSS = """\
.audit-row { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; margin: 8px 0 14px; }
.audit-row figure { margin: 0; width: 136px; }
.audit-row figure img { width: 128px; height: auto; image-rendering: pixelated; }
.cluster { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 10px 0; }
.cluster.flagged { border-color: #c0392b; background: #fff6f4; }
.cluster h4 { margin: 0 0 6px; font-size: 15px; }
.flag { color: #c0392b; font-weight: 700; }
.why { margin: 4px 0 8px; max-width: 90ch; }
.bad-pred { color: #c0392b; }
.strip { width: 420px; max-width: 100%; }
.confusion { max-width: 520px; }
.numbers { font-size: 13px; color: #444; margin: 4px 0; }
.evidence-row { display: flex; gap: 10px; flex-wrap: wrap; align-items: flex-start; margin: 6px 0 12px; }
.evidence-row figure { margin: 0; width: 136px; }
.evidence-row figure img { width: 128px; height: auto; image-rendering: pixelated; }
.evidence-row figcaption { font-size: 12px; }
"""
#: the per-image columns the summary reads (the maps are read class by class)
SCALARS = ["index", "id", "ok", "error", "label", "klass", "pred", "peak_x", "peak_y"]


@dataclass
class ClassAudit:
    """One class: its images (positions in the audit), accuracy, mean map, clusters, outliers."""

    index: int
    name: str
    n: int
    accuracy: float | None
    mean: np.ndarray
    examples: list[int]
    outliers: list[int]
    clusters: list[Cluster]
    cluster_examples: list[list[int]]
    numbers: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.name, "accuracy": self.accuracy, "n": self.n,
                "clusters": [c.to_dict() for c in self.clusters]}


def _mean_or_none(v: np.ndarray) -> float | None:
    return float(v.mean()) if v.size else None


def summarise(out: Path, manifest: dict[str, Any], *, loader: Callable[[int], Any] | None = None,
              seed: int = 0) -> "Audit":
    """The :class:`Audit` of the shards under ``out`` (see the module docstring)."""
    names = list(manifest["class_names"])
    t = read_shards(out, SCALARS)

    # a column as numpy, no Python objects (the table as a default, so that `del t, col` below frees it)
    def col(name: str, dtype: Any, null: Any = -1, table: Any = t) -> np.ndarray:
        return np.asarray(table.column(name).fill_null(null).to_numpy(zero_copy_only=False), dtype)

    ok = col("ok", bool, False)
    errors = zip(t.column("id").to_pylist(), t.column("error").to_pylist(), ok)
    skipped = [{"image": i, "skipped": e} for i, e, g in errors if not g] if not ok.all() else []
    idx = col("index", np.int64)[ok]
    ids = [i for i, g in zip(t.column("id").to_pylist(), ok) if g]
    label = col("label", np.int64)[ok]
    klass = col("klass", np.int64)[ok]
    pred = col("pred", np.int64)[ok]
    peaks = np.stack([col(c, np.float64, 0.0)[ok] for c in ("peak_x", "peak_y")], axis=1)
    del t, col
    labelled = bool(manifest.get("labelled")) and (label >= 0).any()
    known = label >= 0
    accuracy = _mean_or_none((pred == label)[known]) if labelled else None
    classes = sorted(set(klass.tolist()))

    audits = []
    for c in classes:
        rows = np.flatnonzero(klass == c)
        correct = (pred[rows] == label[rows]) if labelled else None
        cs = summarise_class(ClassMaps(out, int(c)), peaks[rows], correct, peaks[klass != c], seed=seed,
                             outliers=OUTLIERS, examples=EXAMPLES)
        name = names[c] if 0 <= c < len(names) else f"class {c}"
        audits.append(ClassAudit(int(c), name, int(len(rows)), _mean_or_none(correct) if correct is not None else None,
                                 cs.mean, [int(r) for r in rows[:EXAMPLES]], [int(rows[j]) for j in cs.outliers],
                                 cs.clusters, [[int(rows[j]) for j in ex] for ex in cs.examples]))
    confusion, conf_classes = None, []
    if labelled:
        conf_classes = sorted(set(label[known].tolist()) | set(pred[known].tolist()))
        pos = {c: i for i, c in enumerate(conf_classes)}
        confusion = np.zeros((len(conf_classes), len(conf_classes)), np.int64)
        for a, b in zip(label[known], pred[known]):
            confusion[pos[int(a)], pos[int(b)]] += 1
    for c in audits:  # the maps' verdict is a hypothesis: a cluster is flagged once an intervention proves it
        for cl in c.clusters:
            cl.flagged = False
    result = Audit(out=out, manifest=manifest, images=int(ok.sum()), skipped=skipped, accuracy=accuracy,
                   classes=audits, ids=ids, indices=idx, labels=label, preds=pred,
                   confusion=None if confusion is None else confusion.tolist(),
                   confusion_classes=[names[c] if c < len(names) else f"class {c}" for c in conf_classes],
                   loader=loader)
    the_plan, table = iv.read(out)
    if the_plan is not None and table is not None:
        result.judge(the_plan, table)
    return result


def _heat_tile(m: np.ndarray, size: int) -> Image.Image:
    v = m / m.max() if m.max() > 0 else m
    return Image.fromarray(colorize(v.astype(np.float32), 0.0, 1.0, "jet"), "RGB").resize((size, size), Image.NEAREST)


@dataclass
class Audit(View):
    """A finished audit (see the module docstring); ``classes`` are :class:`ClassAudit` rows."""

    out: Path
    manifest: dict[str, Any]
    images: int
    skipped: list[dict[str, str]]
    accuracy: float | None
    classes: list[ClassAudit]
    ids: list[str]
    indices: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    confusion: list[list[int]] | None = None
    confusion_classes: list[str] = field(default_factory=list)
    loader: Callable[[int], Any] | None = None
    verdicts: list[iv.Verdict] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    interventions: Any = None

    def judge(self, the_plan: dict[str, Any], table: Any) -> None:
        """The verdicts of the interventions (``the_plan`` and its measured ``table``, see
        :mod:`convlens.audit.interventions`): a cluster is flagged exactly when one of its candidate
        regions became a finding; its reason then is the finding's."""
        names = list(self.manifest["class_names"])
        self.plan, self.interventions = the_plan, table
        self.verdicts = iv.verdicts(table, the_plan, names)
        by_class = {c.index: c for c in self.classes}
        for c in self.classes:  # judged afresh (another replacement): from the maps' own words
            for cl in c.clusters:
                cl.flagged, cl.why = False, cl.maps_why
        for v in self.verdicts:
            c = by_class.get(v.klass)
            if c is None or v.test[0] != "region":
                continue
            for k in v.clusters:
                if 0 <= k < len(c.clusters):
                    cl = c.clusters[k]
                    if v.found:
                        cl.flagged, cl.why = True, v.why
                    elif not cl.flagged:
                        cl.why = f"{cl.why}; tested: {v.why}"

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The proven shortcuts and confounds, each with its effect, control, confidence interval,
        content evidence and accuracy without it (``--json``'s ``findings``)."""
        names = list(self.manifest["class_names"])
        return [v.finding(names) for v in self.verdicts if v.found]

    # -- numbers -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: images, skipped, accuracy, classes with their clusters."""
        return {"images": self.images, "skipped": list(self.skipped), "accuracy": self.accuracy,
                "classes": [c.to_dict() for c in self.classes], "findings": self.findings}

    def details(self) -> dict[str, Any]:
        """``to_dict()`` plus how it was made and the confusion matrix (``summary.json``)."""
        m = self.manifest
        return {**self.to_dict(), "model": m.get("model"), "data": m.get("data"), "method": m.get("method"),
                "layer": m.get("layer"), "target": m.get("target"), "warnings": list(m.get("warnings", [])),
                "confusion": self.confusion, "confusion_classes": self.confusion_classes,
                "flagged": self.flagged(),
                "tested": [{"class": self._cname(v.klass), "region": v.region, "found": v.found, "why": v.why,
                            **{k: x for k, x in v.numbers.items() if k != "significant"}} for v in self.verdicts]}

    def _cname(self, c: int) -> str:
        names = self.manifest["class_names"]
        return names[c] if 0 <= c < len(names) else f"class {c}"

    def flagged(self) -> list[dict[str, Any]]:
        """Every flagged cluster as ``{class, cluster, size, peak, why}``."""
        return [{"class": c.name, "cluster": k, **cl.to_dict()} for c in self.classes
                for k, cl in enumerate(c.clusters) if cl.flagged]

    def __repr__(self) -> str:
        acc = "n/a" if self.accuracy is None else f"{self.accuracy:.3f}"
        return (f"Audit({self.images} images, {len(self.classes)} classes, accuracy {acc}, "
                f"{len(self.flagged())} flagged cluster(s), out={str(self.out)!r})")

    # -- pictures -----------------------------------------------------------------------
    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.manifest["preprocess"])

    def _source(self, pos: int) -> Any:
        """What to read the image at audit position ``pos`` from."""
        if self.loader is not None:
            return self.loader(int(self.indices[pos]))
        return self.ids[pos]

    def input_view(self, pos: int) -> Image.Image:
        """The image at audit position ``pos`` as the model saw it (crop and resize to the input grid)."""
        p = self.preprocess
        img = load_image(self._source(pos), mode="RGB")
        box = p.crop_box(*img.size)
        return img.crop(tuple(round(v) for v in box)).resize((p.width, p.height), Image.BILINEAR)

    def image_map(self, pos: int) -> np.ndarray:
        """The downsampled map of the image at audit position ``pos`` (its audited class)."""
        return item_map(self.out, int(self.indices[pos]), int(self.manifest.get("shard_size", 1 << 62)))

    def overlay(self, pos: int, heat: np.ndarray | None = None, alpha: float = 0.5) -> Image.Image:
        """The image with its own map (or ``heat``) over it, on the model's input grid."""
        view = self.input_view(pos)
        m = self.image_map(pos) if heat is None else heat
        m = m / m.max() if m.max() > 0 else m
        return overlay(view, torch.as_tensor(m, dtype=torch.float32), alpha=alpha)

    def _cell(self) -> int:
        h, w = self.preprocess.height, self.preprocess.width
        return max(96, min(160, 4 * max(h, w))) if max(h, w) < 96 else 128

    def figure(self, max_clusters: int = 4) -> Image.Image:
        """One row per class: its mean map, then each cluster's mean map (size, accuracy, flag)."""
        if not self.classes:
            raise SpecError("this audit has no readable images to draw", param="audit")
        cell = self._cell()
        rows, titles = [], []
        for c in self.classes:
            row = [_heat_tile(c.mean, cell)]
            tt = [f"all {c.n}" + ("" if c.accuracy is None else f" · {c.accuracy:.0%}")]
            for k, cl in enumerate(c.clusters[:max_clusters]):
                row.append(_heat_tile(cl.mean, cell))
                acc = "" if cl.accuracy is None else f" · {cl.accuracy:.0%}"
                tt.append(f"{'SHORTCUT? ' if cl.flagged else ''}#{k + 1}: {cl.size}{acc}")
            rows.append(row)
            titles.append(tt)
        flagged = len(self.flagged())
        sub = (f"{self.images} images · mean {self.manifest.get('method')} map per class, then per strategy "
               f"(spectral clusters) · {flagged} flagged")
        return grid(rows, row_titles=[c.name[:22] for c in self.classes], col_titles=titles,
                    title=f"audit of {self.manifest.get('model')}", subtitle=sub, cell=cell)

    def _thumbs(self, positions: list[int], heat: np.ndarray | None = None) -> list[dict[str, Any]]:
        out = []
        for p in positions:
            try:
                img = self.overlay(p, heat)
            except Exception:  # noqa: BLE001 - a picture that moved away since the audit: shown as missing
                img = None
            name = Path(self.ids[p]).name if os.sep in self.ids[p] or "/" in self.ids[p] else self.ids[p]
            pred = int(self.preds[p])
            cls = self.manifest["class_names"]
            out.append({"src": None if img is None else data_uri(self._scale(img), "JPEG"),
                        "name": name, "pred": cls[pred] if pred < len(cls) else str(pred),
                        "correct": None if self.labels[p] < 0 else bool(self.labels[p] == pred)})
        return out

    def _scale(self, img: Image.Image) -> Image.Image:
        c = self._cell()
        w, h = img.size
        f = max(1, c // max(w, h))
        return img.resize((w * f, h * f), Image.NEAREST) if f > 1 else img

    def html(self, layout: Any = None, public: bool = False) -> str:
        """The self-contained audit page.  ``layout``: another page template for it to extend (the web
        explorer's, whose stylesheets are files: then the page inlines no style); ``public``: show file
        names relative to the audited folder, never a path of this machine."""
        cell = self._cell()
        shown = self.shown_name if public else str
        classes = []
        for c in self.classes:
            clusters = []
            for k, (cl, ex) in enumerate(zip(c.clusters, c.cluster_examples)):
                clusters.append({"k": k + 1, **cl.to_dict(), "where": place(*cl.peak),
                                 "mean": data_uri(_heat_tile(cl.mean, cell)), "examples": self._thumbs(ex),
                                 "numbers": {k2: round(v, 3) for k2, v in cl.numbers.items()}})
            classes.append({"name": c.name, "n": c.n, "accuracy": c.accuracy,
                            "mean": data_uri(_heat_tile(c.mean, cell)),
                            "examples": self._thumbs(c.examples), "outliers": self._thumbs(c.outliers),
                            "clusters": clusters, "flagged": sum(cl.flagged for cl in c.clusters)})
        confusion = (data_uri(confusion_image(self.confusion, self.confusion_classes, "confusion (rows: true)"))
                     if self.confusion and len(self.confusion_classes) <= 30 else None)
        evidence = [self._evidence(v) for v in self.verdicts if v.found]
        m = self.manifest
        skipped = [{"image": shown(s["image"]), "skipped": s["skipped"]} for s in self.skipped]
        warnings = [w.replace(str(m.get("data")), shown(str(m.get("data")))) for w in m.get("warnings", [])]
        return render("audit.html", version=__version__, generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                      model=m.get("model"), data=shown(str(m.get("data"))), method=m.get("method"),
                      layer=m.get("layer"), images=self.images, skipped=skipped, accuracy=self.accuracy,
                      classes=classes, flagged=self.flagged(), warnings=warnings, confusion=confusion,
                      evidence=evidence, tested=len(self.verdicts), plan=self.plan is not None,
                      overview=data_uri(self.figure()), layout=layout, audit_css=None if layout else AUDIT_CSS)

    def _evidence(self, v: iv.Verdict) -> dict[str, Any]:
        """What the page shows of a finding (:func:`~convlens.audit.evidence.evidence`)."""
        where = {int(i): p for p, i in enumerate(self.indices)}

        def picture(index: int) -> Image.Image | None:
            pos = where.get(int(index))
            if pos is None:
                return None
            try:
                return self.input_view(pos).convert("RGB")
            except Exception:  # noqa: BLE001 - a picture that moved away since the audit: not shown
                return None

        return evidence(v, list(self.manifest["class_names"]), self.plan, self.interventions, picture, self._scale)

    def shown_name(self, path: str) -> str:
        """A file or data spec as shown to others: relative to the audited folder when under it, else
        its last part (``run:PATH:test`` keeps its split)."""
        data = str(self.manifest.get("data", ""))
        text = str(path)
        if text.startswith("run:"):
            body, _, part = text[4:].rpartition(":")
            return f"run:{Path(body or part).name}" + (f":{part}" if body else "")
        try:
            root = Path(data)
            rel = Path(text).relative_to(root if root.is_dir() or not root.suffix else root.parent)
            return f"{root.name}/{rel}" if str(rel) != "." else root.name
        except ValueError:
            return Path(text).name

    def save(self, out_dir: str | os.PathLike | None = None) -> Saved:
        """``summary.json``, ``overview.png`` and ``index.html`` (default: the audit directory)."""
        out = OutDir(self.out if out_dir is None else out_dir)
        out.json("json", "summary.json", self.details())
        if self.classes:
            out.png("figure", "overview.png", self.figure())
        out.text("html", "index.html", self.html())
        return out.saved()


def load_audit(path: str | os.PathLike, loader: Callable[[int], Any] | None = None) -> Audit:
    """A finished audit directory as an :class:`Audit` (SpecError, param ``audit``, when it is not one
    or is unfinished).  The images of a run's split are read from the run again (for the pictures);
    ``loader(index)`` overrides where they come from."""
    out = Path(path)
    manifest = read_manifest(out, finished=True)
    data = str(manifest.get("data", ""))
    if loader is None and data.startswith("run:"):
        try:
            sources = {it.index: it.source for it in resolve(data, manifest["class_names"]).items}
            loader = sources.__getitem__
        except ConvlensError:  # the run moved away: the page shows no pictures, the numbers stand
            loader = None
    return summarise(out, manifest, loader=loader)
