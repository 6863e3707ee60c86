"""The Ray engine (``engine="ray"``; the ``convlens[ray]`` extra): Ray Data over the shards.

Each row of the Ray dataset is one shard to do (its items: paths, or arrays for a run's split);
``map_batches`` hands them to a pool of :class:`ShardWorker` actors (one per GPU, or one per
``cpus_per_worker`` CPUs), each holding the model once.  A worker reads and decodes its shard's
images, runs the same :class:`~convlens.audit.engine.Explainer` as the local engine (decoding
overlapped with the model by :func:`~convlens.audit.engine.run_shards`) and writes the same
Parquet shard under the audit directory (which must be a path every node can write: a shared
file system on a cluster).  The aggregation and SpRAy run afterwards on the written maps.

``address`` joins a running cluster (``ray.init(address=...)``, e.g. ``"auto"`` inside
``ray job submit``); without it a local Ray starts with ``workers`` CPUs and stops afterwards.
"""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import SpecError
from ..models.lensmodel import LensModel
from .engine import Explainer, run_shards
from .inputs import Item


class ShardWorker:
    """A Ray Data actor: the model loaded once, then one whole shard per call."""

    def __init__(self, model: Any, out: str, method: str, layer: Any, target: str, top_k: int, map_size: int,
                 batch_size: int, threads: int, device: str):
        import ray

        torch.set_num_threads(max(1, threads))
        lm = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self.explainer = Explainer(lm.to(device), method, layer, target, top_k, map_size)
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


def run_ray(lm: LensModel, shards: Sequence[tuple[int, Sequence[Item]]], out: Path, *, method: str, layer: Any,
            target: str, top_k: int, map_size: int, batch_size: int, workers: int | None, address: str | None,
            progress: Callable[[int, int], None] | None = None, done: int = 0, total: int | None = None,
            cpus_per_worker: int = 1) -> int:
    """Audit ``shards`` on Ray (see the module docstring); returns the images done, resumed ones included."""
    workers = workers or (2 if address is None else None)
    saved = _handlers()
    started = start(address, max(1, (workers or 2) * cpus_per_worker))
    import ray

    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        gpu = lm.device.type == "cuda"
        if workers is None:  # on a cluster: one actor per GPU, or per cpus_per_worker CPUs
            res = ray.cluster_resources()
            workers = max(1, int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 1)) // cpus_per_worker)
        module_device = lm.device
        lm.to("cpu")
        ref = ray.put(lm)
        lm.to(module_device)
        rows = [{"shard": int(k), "payload": pickle.dumps(list(items))} for k, items in shards]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(
            ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
            num_gpus=1 if gpu else 0,
            fn_constructor_kwargs={"model": ref, "out": str(out), "method": method, "layer": layer, "target": target,
                                   "top_k": top_k, "map_size": map_size, "batch_size": batch_size,
                                   "threads": cpus_per_worker, "device": "cuda" if gpu else "cpu"})
        total = total if total is not None else done + sum(len(s) for _, s in shards)
        for row in ds.iter_rows():
            done += int(row["rows"])
            if progress is not None:
                progress(done, total)
    finally:
        if started:
            ray.shutdown()
            _restore(saved)  # the caller's Ctrl-C / SIGTERM handling, as it was before Ray
    return done


