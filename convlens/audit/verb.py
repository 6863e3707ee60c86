"""``audit(model, data, ...)``: every image explained, written as Parquet shards, then class by class
summaries and strategies (see :mod:`convlens.audit`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings as _warnings
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError, SpecError
from ..lens.cam import check_layers, default_layer, parse_layers, parse_methods
from ..models import LensModel, load_model
from ..options import AuditOptions, check_options
from . import interventions as iv
from .engine import Explainer, run_shards
from .inputs import AuditData, resolve
from .maps import MAP_SIZE
from .ray_engine import run_ray, run_ray_interventions, session
from .result import Audit, summarise
from .shards import (
    check_out,
    done_shards,
    maps_of,
    read_shards,
    records_stop,
    remove_leftovers,
    shard_ranges,
    write_manifest,
)
from .shards import map_size as stored_map_size

TARGETS = ("label", "pred")
ENGINES = ("local", "ray")
DEFAULT_SHARD = 512


class AuditWarning(UserWarning):
    """Something about the data the audit worked around (no labels, skipped files)."""


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{name} must be a whole number of at least {low} (got {value!r})", param=name)
    return value


def prepare(model: Any, data: Any, method: str, layer: Any, target: str, top_k: int, shard_size: int,
            map_size: int, out: Any) -> tuple[LensModel, AuditData, dict[str, Any], Path]:
    """Everything checked and resolved before any image is decoded: the model, the items, the
    manifest of this audit and its directory."""
    methods = parse_methods(method)
    if len(methods) != 1:
        raise SpecError(f"method: an audit uses one method (got {', '.join(methods)})", param="method")
    if target not in TARGETS:
        raise SpecError(f"target must be 'label' (the true class, else the predicted) or 'pred' (got {target!r})",
                        param="target")
    _int("top_k", top_k, 1)
    _int("shard_size", shard_size, 1)
    _int("map_size", map_size, 4)
    lm = model if isinstance(model, LensModel) else load_model(model)
    layers = check_layers(lm, parse_layers(layer)) if layer is not None else [default_layer(lm)]
    layer_name = layers[0] if len(layers) == 1 else ",".join(layers)
    ad = resolve(data, lm.class_names)
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="convlens-audit-"))
    manifest = {
        "state": "running", "model": lm.name, "data": ad.spec, "items": len(ad.items), "fingerprint": ad.fingerprint(),
        "method": methods[0], "layer": layer_name, "target": target, "top_k": int(top_k),
        "shard_size": int(shard_size), "map_size": int(map_size),
        "shards": len(shard_ranges(len(ad.items), shard_size)),
        "labelled": ad.labelled, "class_names": list(lm.class_names), "preprocess": lm.config.to_dict(),
        "warnings": list(ad.warnings),
    }
    return lm, ad, manifest, out_dir


def sample_maps(out_dir: Path, indices: Any) -> dict[int, Any]:
    """The audited class's maps of the items ``indices`` (audit indices), read from the shards."""
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return {}
    t = read_shards(out_dir, ["index", "map"], filter=[("index", "in", wanted)])
    return dict(zip(t.column("index").to_pylist(), maps_of(t, "map", stored_map_size(out_dir))))


def intervene(result: Audit, lm: LensModel, ad: AuditData, out_dir: Path, *, engine: str = "local",
              address: str | None = None, workers: int | None = None, replace: str = "mean") -> None:
    """Test the audit's hypotheses by intervention (:mod:`convlens.audit.interventions`): the plan from
    its maps (the objects from the sampled images' own maps), regions replaced as ``replace`` says,
    the forwards on ``engine``, ``interventions.json`` and ``interventions.parquet`` written, the
    verdicts set on ``result``."""
    t = read_shards(out_dir, ["index", "ok", "klass", "label"])
    ok = t.column("ok").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    index = t.column("index").to_numpy(zero_copy_only=False)[ok].astype("int64")
    klass = t.column("klass").fill_null(-1).to_numpy(zero_copy_only=False)[ok].astype("int64")
    label = t.column("label").fill_null(-1).to_numpy(zero_copy_only=False)[ok].astype("int64")
    c, h, w = lm.config.input_size
    sample = iv.sample(klass, index)
    subs = iv.subjects({"sample": sample}, ad.items, dict(zip(index.tolist(), klass.tolist())),
                       dict(zip(index.tolist(), label.tolist())))
    # the sample is decoded here for the content candidates (a few hundred small images at most)
    x, x_index, x_klass, x_label = iv.decode(lm, subs, workers or min(4, os.cpu_count() or 1))
    the_plan = iv.plan(result.classes, sample, c, h, w, images=lm.config.denormalize(x.float()), klass=x_klass,
                       replace=replace, maps=sample_maps(out_dir, x_index))
    if engine == "ray":
        cols = run_ray_interventions(lm, subs, the_plan, workers=workers, address=address)
    else:
        cols = iv.measure(lm, x, x_index, x_klass, x_label, the_plan)
    iv.write_plan(out_dir, the_plan)
    iv.write_table(out_dir, cols)
    the_plan, table = iv.read(out_dir)
    result.judge(the_plan, table)


@records_stop  # an audit stopped by an exception or a signal never stays "running"
def audit(model: Any, data: Any, method: str = "gradcam", layer: str | None = None, target: str = "label", *,
          out: str | os.PathLike | None = None, engine: str = "local", address: str | None = None,
          top_k: int = 5, batch_size: int | None = None, shard_size: int = DEFAULT_SHARD, map_size: int = MAP_SIZE,
          workers: int | None = None, replace: str = "mean", progress: Callable[[int, int], None] | None = None,
          on_start: Callable[[dict[str, Any], int], None] | None = None) -> Audit:
    """Audit ``model`` over ``data``: where it looks class by class, its strategies, its shortcuts.

    ``model``: a LensModel or anything :func:`~convlens.models.load_model` takes.  ``data``: a
    folder with class subfolders (without them: audited by predicted class, with a warning), a
    list of image files, ``"run:PATH[:test|val|train|all]"`` or an ImageSet.  ``method``: one
    explain method; ``layer``: its layer (default: found automatically).  ``target``: ``"label"``
    clusters the true class's heatmap of each image (the predicted class's when no label is
    known), ``"pred"`` the predicted class's.  ``out``: the audit directory (Parquet shards
    ``shards/part-NNNNN.parquet``, ``audit.json``, then ``summary.json``, ``overview.png``,
    ``index.html``); a directory holding this same audit unfinished is resumed from its shards,
    one holding another audit or other files is refused; None writes to a temporary directory.
    ``engine``: ``"local"`` (threads: decoding, model and writing overlap) or ``"ray"`` (Ray Data
    actors, ``address`` of a cluster or a local Ray).  ``batch_size``: images per forward (the
    model's default); ``shard_size``: images per Parquet file; ``workers``: decoding threads
    (local) or model actors (ray).  ``replace``: how the interventions that test the maps' hypotheses
    replace a region: ``"mean"`` (the data's mean colour), ``"blur"`` (a strong Gaussian blur) or
    ``"inpaint"`` (ROAD's noisy linear inpainting); a finished audit run again with another
    replacement redoes only the interventions.  ``progress(done, total)`` after each batch (local) or shard (ray);
    ``on_start(manifest, resumed_images)`` once the work is known.

    Unreadable images are skipped, counted and listed (``to_dict()["skipped"]``); the audit
    fails only when none can be read.
    """
    if engine not in ENGINES:
        raise SpecError(f"engine must be 'local' or 'ray' (got {engine!r})", param="engine")
    if address is not None and engine != "ray":
        raise SpecError("address joins a Ray cluster: it needs engine='ray'", param="address")
    lm, ad, manifest, out_dir = prepare(model, data, method, layer, target, top_k, shard_size, map_size, out)
    batch_size = _int("batch_size", batch_size, 1) if batch_size is not None else lm.default_batch_size()
    if workers is not None:
        _int("workers", workers, 1)
    # the declared bounds (convlens.options.AuditOptions), before any image is read
    replace = check_options(AuditOptions, top_k=top_k, batch_size=batch_size, shard_size=shard_size, workers=workers,
                            replace=replace).replace
    manifest["replace"] = replace
    previous = check_out(out_dir, manifest)
    for w in ad.warnings:
        _warnings.warn(w, AuditWarning, stacklevel=2)
    ranges = shard_ranges(len(ad.items), shard_size)
    if previous is not None and previous.get("state") == "done":
        done = set(range(len(ranges)))
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out_dir)
        write_manifest(out_dir, manifest)
        done = done_shards(out_dir, len(ranges))
    todo = [(k, ad.items[a:b]) for k, (a, b) in enumerate(ranges) if k not in done]
    resumed = sum(b - a for k, (a, b) in enumerate(ranges) if k in done)
    if on_start is not None:
        on_start(manifest, resumed)
    # one Ray for both phases of a Ray audit with work to do (its start-up is seconds)
    ray_once = session(address, max(1, workers or 2)) if engine == "ray" and todo else contextlib.nullcontext()
    with ray_once:
        if todo and engine == "local":
            ex = Explainer(lm, manifest["method"], None if layer is None else layer, target, top_k, map_size)
            run_shards(ex, todo, out_dir, batch_size=batch_size, workers=workers or min(4, os.cpu_count() or 1),
                       progress=progress, done=resumed, total=len(ad.items))
        elif todo:
            run_ray(lm, todo, out_dir, method=manifest["method"], layer=layer, target=target, top_k=top_k,
                    map_size=map_size, batch_size=batch_size, workers=workers, address=address,
                    progress=progress, done=resumed, total=len(ad.items))
        sources = {it.index: it.source for it in ad.items}
        result = summarise(out_dir, manifest, loader=sources.__getitem__)
        if result.images == 0:
            first = result.skipped[0] if result.skipped else {"image": ad.spec, "skipped": "nothing to read"}
            raise DataError(f"data {ad.spec}: none of its {len(ad.items)} image(s) could be read "
                            f"(first: {first['image']}: {first['skipped']})", param="data")
        if result.skipped:
            _warnings.warn(f"skipped {len(result.skipped)} unreadable image(s) of {len(ad.items)} "
                           f"(first: {result.skipped[0]['image']})", AuditWarning, stacklevel=2)
        if result.plan is None or result.plan.get("replace", "mean") != replace:
            intervene(result, lm, ad, out_dir, engine=engine, address=address, workers=workers, replace=replace)
    result.save()
    write_manifest(out_dir, {**manifest, "state": "done", "images": result.images, "skipped": len(result.skipped)})
    result.manifest = {**manifest, "state": "done"}
    return result
