"""The Ray engine (``engine="ray"``; the ``convlens[ray]`` extra): Ray Data over the shards.

Each row of the Ray dataset is one shard to do (its items: paths, or arrays for a run's split);
``map_batches`` hands them to a pool of :class:`ShardWorker` actors (one per GPU, or one per
``cpus_per_worker`` CPUs), each holding the model once.  A worker reads and decodes its shard's
images, runs the same :class:`~convlens.audit.engine.Explainer` as the local engine (decoding
overlapped with the model by :func:`~convlens.audit.engine.run_shards`) and writes the same
Parquet shard under the audit directory (which must be a path every node can write: a shared
file system on a cluster).  The aggregation and SpRAy run afterwards on the written maps.

Start-up is most of the cost of a small audit (measured on 2 cores: Ray Data's executor starts
three helper actors once per cluster, ~2.9 s of CPU, and every worker imports ``ray.data``,
~0.9 s; then the worker's own imports), so what is ours is kept short: the model is shipped with
a preprocessing that needs neither timm nor torchvision on the worker (:func:`portable_transform`:
~1.8 s of imports less in every actor), and ``convlens.audit`` loads its summary modules lazily.

``address`` joins a running cluster (``ray.init(address=...)``, e.g. ``"auto"`` inside
``ray job submit``); without it a local Ray starts with ``workers`` CPUs and stops afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import SpecError
from ..models.lensmodel import LensModel
from . import interventions as iv
from .engine import Explainer, run_shards
from .inputs import Item


class PortableTransform:
    """torchvision's ``Compose([Resize(int or (h, w)), CenterCrop, ToTensor, Normalize])`` on a PIL
    image, the same tensor bit for bit, with Pillow and torch only.

    For start-up time: the eval transform comes from timm (``MaybeToTensor``), and unpickling it
    imports timm and torchvision (which imports ``torch._dynamo``): ~1.8 s of CPU in every Ray
    worker, on a 2-core machine as much as a quarter of a 2,000-image audit.  Anything this class
    does not do exactly as torchvision does (a crop larger than the resized image: padding) goes to
    the original transform, kept pickled and loaded only then.
    """

    def __init__(self, resize: tuple[int, ...], resample: int, crop: tuple[int, int], mean: list[float],
                 std: list[float], original: bytes):
        self.resize, self.resample, self.crop = resize, resample, crop
        self.mean, self.std, self.original = mean, std, original
        self._fallback: Any = None

    def __call__(self, pic: Any) -> torch.Tensor:
        w, h = pic.size
        if len(self.resize) == 1:  # the shorter side becomes resize[0] (torchvision's int size)
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.resize[0], int(self.resize[0] * long / short)
            nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            nh, nw = self.resize
        ch, cw = self.crop
        if ch > nh or cw > nw or pic.mode not in ("RGB", "L"):
            return self.fallback(pic)
        if (nh, nw) != (h, w):
            pic = pic.resize((nw, nh), self.resample)
        top, left = int(round((nh - ch) / 2.0)), int(round((nw - cw) / 2.0))
        if (top, left, ch, cw) != (0, 0, nh, nw):
            pic = pic.crop((left, top, left + cw, top + ch))
        x = torch.from_numpy(np.array(pic, np.uint8, copy=True)).view(ch, cw, len(pic.getbands()))
        x = x.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return x.sub_(mean).div_(std)

    def fallback(self, pic: Any) -> torch.Tensor:
        if self._fallback is None:
            self._fallback = pickle.loads(self.original)
        return self._fallback(pic)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fallback": None}


def portable_transform(transform: Any) -> Any:
    """``transform`` as a :class:`PortableTransform` where it is exactly the steps that class does,
    else ``transform`` itself (unchanged: the worker then imports what it needs)."""
    steps = getattr(transform, "transforms", None)
    if type(transform).__name__ != "Compose" or not isinstance(steps, list) or len(steps) != 4:
        return transform
    resize, crop, to_tensor, norm = steps
    names = [(type(s).__module__, type(s).__name__) for s in steps]
    tv = "torchvision.transforms.transforms"
    if names[0] != (tv, "Resize") or names[1] != (tv, "CenterCrop") or names[3] != (tv, "Normalize") \
            or names[2] not in ((tv, "ToTensor"), ("timm.data.transforms", "MaybeToTensor")):
        return transform
    from torchvision.transforms.functional import pil_modes_mapping  # already imported: it built the transform

    size = [resize.size] if isinstance(resize.size, int) else list(resize.size)
    if resize.max_size is not None or len(size) not in (1, 2) or resize.interpolation not in pil_modes_mapping \
            or len(crop.size) != 2 or norm.inplace:
        return transform
    as_list = lambda v: [float(x) for x in (v.tolist() if isinstance(v, torch.Tensor) else v)]  # noqa: E731
    return PortableTransform(tuple(int(s) for s in size), int(pil_modes_mapping[resize.interpolation]),
                             (int(crop.size[0]), int(crop.size[1])), as_list(norm.mean), as_list(norm.std),
                             pickle.dumps(transform))


class ShardWorker:
    """A Ray Data actor: the model loaded once, then one whole shard per call."""

    def __init__(self, model: list[Any], out: str, method: str, layer: Any, target: str, top_k: int,
                 map_size: int, batch_size: int, threads: int, device: str):
        import ray

        torch.set_num_threads(max(1, threads))
        # model: [ObjectRef] of the LensModel (boxed, so that Ray Data passes the reference on)
        self.explainer = Explainer(ray.get(model[0]).to(device), method, layer, target, top_k, map_size)
        self.out, self.batch_size, self.threads = Path(out), batch_size, threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, rows = [], []
        for k, payload in zip(batch["shard"], batch["payload"]):
            items: list[Item] = pickle.loads(payload)
            run_shards(self.explainer, [(int(k), items)], self.out, batch_size=self.batch_size,
                       workers=max(1, self.threads))
            shards.append(int(k))
            rows.append(len(items))
        return {"shard": np.asarray(shards, np.int64), "rows": np.asarray(rows, np.int64)}


def _handlers() -> dict[int, Any]:
    """The process's SIGINT/SIGTERM handlers: ``ray.init`` replaces them and ``ray.shutdown`` does not restore them."""
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(saved: dict[int, Any]) -> None:
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


def start(address: str | None, cpus: int) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it (and must stop it)."""
    try:
        import ray
    except ImportError:
        raise SpecError("engine ray needs the ray extra: pip install 'convlens[ray]'", param="engine") from None
    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=cpus, **kw)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise SpecError(f"address {address or '(local)'}: cannot start or join {where} "
                        f"({str(exc).splitlines()[0][:160]})", param="address") from None
    return True


@contextlib.contextmanager
def session(address: str | None, cpus: int) -> Iterator[None]:
    """One Ray for the whole audit (the shards, then the interventions): joined or started here, and a
    local one stopped at the end (with the process's signal handlers given back); the engine's calls
    inside it find Ray running and leave it so."""
    saved = _handlers()
    started = start(address, cpus)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()
            _restore(saved)


@contextlib.contextmanager
def _data_session(address: str | None, workers: int | None, cpus_per_worker: int,
                  gpu: bool) -> Iterator[tuple[Any, int]]:
    """Ray Data for one of the engine's passes: Ray joined or started (:func:`session`), its
    executor's progress bars and INFO lines kept off the user's terminal, and the number of actors
    (``workers``; on a cluster by default one per GPU, or per ``cpus_per_worker`` CPUs)."""
    workers = workers or (2 if address is None else None)
    with session(address, max(1, (workers or 2) * cpus_per_worker)):
        import ray

        data_log = logging.getLogger("ray.data")
        level = data_log.level
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False  # ours is the audit's own
            data_log.setLevel(logging.ERROR)
            if workers is None:
                res = ray.cluster_resources()
                workers = max(1, int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 1)) // cpus_per_worker)
            yield ray, workers
        finally:
            data_log.setLevel(level)


def _put_model(lm: LensModel) -> Any:
    """The model in Ray's object store, on the CPU and with its portable preprocessing."""
    import ray

    config, device = lm.config, lm.device
    transform = config.transform  # built here (timm) if not yet: the workers only unpickle it
    lm.to("cpu")
    object.__setattr__(config, "_transform", portable_transform(transform))
    try:
        return ray.put(lm)
    finally:
        object.__setattr__(config, "_transform", transform)
        lm.to(device)


def run_ray(lm: LensModel, shards: Sequence[tuple[int, Sequence[Item]]], out: Path, *, method: str, layer: Any,
            target: str, top_k: int, map_size: int, batch_size: int, workers: int | None, address: str | None,
            progress: Callable[[int, int], None] | None = None, done: int = 0, total: int | None = None,
            cpus_per_worker: int = 1) -> int:
    """Audit ``shards`` on Ray (see the module docstring); returns the images done, resumed ones included."""
    gpu = lm.device.type == "cuda"
    with _data_session(address, workers, cpus_per_worker, gpu) as (ray, workers):
        model = [_put_model(lm)]
        rows = [{"shard": int(k), "payload": pickle.dumps(list(items))} for k, items in shards]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(
            ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
            num_gpus=1 if gpu else 0,
            fn_constructor_kwargs={"model": model, "out": str(out), "method": method, "layer": layer,
                                   "target": target, "top_k": top_k, "map_size": map_size, "batch_size": batch_size,
                                   "threads": cpus_per_worker, "device": "cuda" if gpu else "cpu"})
        total = total if total is not None else done + sum(len(s) for _, s in shards)
        for row in ds.iter_rows():
            done += int(row["rows"])
            if progress is not None:
                progress(done, total)
    return done


class InterventionWorker:
    """A Ray Data actor for the interventions: the model loaded once, the sampled images decoded once,
    then one chunk of the plan's tests per call (batched forwards, :func:`convlens.audit.interventions.measure`)."""

    def __init__(self, model: list[Any], subjects: bytes, plan: bytes, threads: int, device: str):
        import ray

        torch.set_num_threads(max(1, threads))
        self.lm = ray.get(model[0]).to(device)
        self.plan = pickle.loads(plan)
        self.x, self.index, self.klass, self.label = iv.decode(self.lm, pickle.loads(subjects), max(1, threads))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for payload in batch["tests"]:
            tests = pickle.loads(payload)
            out.append(pickle.dumps(iv.measure(self.lm, self.x, self.index, self.klass, self.label, self.plan,
                                               tests=tests)))
        return {"rows": np.asarray(out, dtype=object)}


def run_ray_interventions(lm: LensModel, subjects: Sequence[iv.Subject], plan: dict[str, Any], *,
                          workers: int | None, address: str | None, cpus_per_worker: int = 1,
                          chunk: int = 2) -> dict[str, list[Any]]:
    """The plan's tests on Ray actors, ``chunk`` tests per task; the same columns as
    :func:`convlens.audit.interventions.run_local`, in the plan's test order."""
    gpu = lm.device.type == "cuda"
    tests = iv.all_tests(plan)
    if not tests:
        return iv.concat([])
    chunks = [tests[s:s + chunk] for s in range(0, len(tests), chunk)]
    with _data_session(address, workers, cpus_per_worker, gpu) as (ray, workers):
        workers = max(1, min(workers, len(chunks)))
        model = [_put_model(lm)]
        rows = [{"k": k, "tests": pickle.dumps(c)} for k, c in enumerate(chunks)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(
            InterventionWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker, num_gpus=1 if gpu else 0,
            fn_constructor_kwargs={"model": model, "subjects": pickle.dumps(list(subjects)),
                                   "plan": pickle.dumps(plan), "threads": cpus_per_worker,
                                   "device": "cuda" if gpu else "cpu"})
        parts = [pickle.loads(r["rows"]) for r in ds.iter_rows()]
    return iv.concat(parts)
