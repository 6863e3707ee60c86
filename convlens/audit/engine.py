"""The local engine: decoding, the model and writing overlap, memory bounded by a few batches.

A producer thread lists and decodes the next batches (a small thread pool: Pillow releases the
GIL) into a queue of at most ``PREFETCH`` batches; this thread runs the model
(:func:`~convlens.lens.cam.predict_explain` with per-image targets: the top-k predictions,
the predicted class's map and the true class's map from one forward; a gradient CAM adds one
backward through the head when some label is not the prediction); a writer thread turns each
finished shard into a Parquet file (queue of at most ``PENDING_SHARDS``).  Nothing but the shard
being filled and those queues is held, whatever the data set's size.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .._threads import lower_priority
from ..errors import ConvlensError
from ..lens.cam import predict_explain
from ..models.lensmodel import LensModel
from .inputs import Item
from .maps import MAP_SIZE, downsample, numbers, peaks
from .shards import schema, write_shard

PREFETCH = 3
PENDING_SHARDS = 2
Progress = Callable[[int, int], None]


@dataclass
class Decoded:
    tensor: torch.Tensor | None
    size: tuple[int, int] | None
    error: str | None


def decoder(lm: LensModel) -> Callable[[Item], Decoded]:
    """Item -> the model's input tensor (on the CPU) and the original size, or why it cannot be read."""
    transform = lm.config.transform

    def one(item: Item) -> Decoded:
        try:
            pil = lm.load(item.source)
            return Decoded(transform(pil), pil.size, None)
        except ConvlensError as exc:
            text, prefix = str(exc), f"{item.source}: "
            return Decoded(None, None, text[len(prefix):] if text.startswith(prefix) else text)
        except (OSError, ValueError) as exc:  # a decoder's own complaint about a broken file
            return Decoded(None, None, f"{exc.__class__.__name__}: {exc}")

    return one


class Explainer:
    """The per-batch work: predictions, the maps of the audited and the predicted class, numbers."""

    def __init__(self, lm: LensModel, method: str, layer: Any, target: str, top_k: int, map_size: int = MAP_SIZE):
        self.lm, self.method, self.layer, self.target = lm, method, layer, target
        self.k, self.size = min(top_k, lm.num_classes), map_size

    def batch(self, items: Sequence[Item], decoded: Sequence[Decoded]) -> dict[str, list[Any]]:
        """The shard columns for one batch of items (unreadable ones as ``ok=False`` rows)."""
        cols: dict[str, list[Any]] = {f.name: [None] * len(items) for f in schema(self.size)}
        cols["index"] = [it.index for it in items]
        cols["id"] = [it.id for it in items]
        cols["ok"] = [d.tensor is not None for d in decoded]
        cols["error"] = [d.error for d in decoded]
        cols["label"] = [it.label if it.label >= 0 else None for it in items]
        good = [i for i, d in enumerate(decoded) if d.tensor is not None]
        if not good:
            return cols
        lm = self.lm
        x = torch.stack([decoded[i].tensor for i in good]).to(lm.device)
        labels = [items[i].label for i in good]
        use_label = self.target == "label"
        # one forward for the predictions and both maps: column 0 the predicted class, column 1 the
        # true class (-1, the prediction, when unknown); where every label is the prediction the
        # second column costs nothing, else one more backward through the head only
        rows = torch.tensor([[-1, lab if lab >= 0 else -1] for lab in labels], dtype=torch.long)
        preds, ex = predict_explain(lm, x, top_k=self.k, layer=self.layer, method=self.method, target=rows,
                                    batch_size=x.shape[0])
        top_i = [[c.index for c in p.predictions] for p in preds]
        top_p = [[c.probability for c in p.predictions] for p in preds]
        pred = [t[0] for t in top_i]
        pred_maps = ex.heatmaps[:, 0]
        maps = ex.heatmaps[:, 1] if use_label else pred_maps
        prob_label: list[float | None] = [ex.targets[j][1].probability if labels[j] >= 0 else None
                                          for j in range(len(good))]
        klass = [lab if (use_label and lab >= 0) else p for lab, p in zip(labels, pred)]
        small, small_pred = downsample(maps, self.size).numpy(), downsample(pred_maps, self.size).numpy()
        pk, pk_pred = peaks(maps).tolist(), peaks(pred_maps).tolist()
        nums = numbers(small)
        for j, i in enumerate(good):
            w, h = decoded[i].size
            row = {"label": labels[j] if labels[j] >= 0 else None, "klass": klass[j], "pred": pred[j],
                   "prob_pred": top_p[j][0], "prob_label": prob_label[j], "topk_index": top_i[j],
                   "topk_prob": top_p[j], "width": w, "height": h, "map": small[j], "map_pred": small_pred[j],
                   "peak_x": pk[j][0], "peak_y": pk[j][1], "pred_peak_x": pk_pred[j][0], "pred_peak_y": pk_pred[j][1],
                   **{k: float(v[j]) for k, v in nums.items()}}
            for name, value in row.items():
                cols[name][i] = value
        return cols


def _concat(parts: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    return {k: [v for p in parts for v in p[k]] for k in parts[0]}


def run_shards(explainer: Explainer, shards: Sequence[tuple[int, Sequence[Item]]], out: Path, *,
               batch_size: int, workers: int = 2, progress: Progress | None = None, done: int = 0,
               total: int | None = None) -> int:
    """Audit the items of ``shards`` ``[(k, items), ...]`` and write each as shard ``k``; returns the
    number of images done (``done`` counts those resumed from disk, for the progress line)."""
    decode = decoder(explainer.lm)
    total = total if total is not None else done + sum(len(s) for _, s in shards)
    batches: queue.Queue = queue.Queue(maxsize=PREFETCH)
    pending: queue.Queue = queue.Queue(maxsize=PENDING_SHARDS)
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            # the decoding threads at a lower priority: they fill the CPU time the model leaves
            # instead of preempting its threads (see convlens/_threads.py)
            with ThreadPoolExecutor(max(1, workers), thread_name_prefix="convlens-audit-decode",
                                    initializer=lower_priority) as pool:
                for k, items in shards:
                    for s in range(0, len(items), batch_size):
                        chunk = list(items[s:s + batch_size])
                        decoded = list(pool.map(decode, chunk))
                        while not stop.is_set():
                            try:
                                batches.put((k, s + batch_size >= len(items), chunk, decoded), timeout=0.2)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
        except BaseException as exc:  # handed to the consumer, raised there
            failure.append(exc)
        finally:
            batches.put(None)

    def write() -> None:
        lower_priority()
        while True:
            job = pending.get()
            if job is None:
                return
            if failure:
                continue
            try:
                write_shard(out, job[0], job[1], explainer.size)
            except BaseException as exc:
                failure.append(exc)
                stop.set()

    producer = threading.Thread(target=produce, name="convlens-audit-read", daemon=True)
    writer = threading.Thread(target=write, name="convlens-audit-write", daemon=True)
    producer.start()
    writer.start()
    parts: list[dict[str, list[Any]]] = []
    try:
        while True:
            job = batches.get()
            if job is None:
                break
            k, last, chunk, decoded = job
            parts.append(explainer.batch(chunk, decoded))
            done += len(chunk)
            if last:
                pending.put((k, _concat(parts)))
                parts = []
            if progress is not None:
                progress(done, total)
            if failure:
                break
    finally:
        stop.set()
        while producer.is_alive():
            try:
                batches.get(timeout=0.1)
            except queue.Empty:
                pass
        pending.put(None)
        writer.join()
    if failure:
        raise failure[0]
    return done
