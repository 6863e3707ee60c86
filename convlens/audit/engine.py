"""The local engine: decoding, the model and writing overlap, memory bounded by a few batches.

A producer thread lists and decodes the next batches (a small thread pool: Pillow releases the
GIL) into a queue of at most ``PREFETCH`` batches; this thread runs the model
(:func:`~convlens.lens.cam.predict_explain` for Grad-CAM: the top-k predictions and the
predicted class's map from one forward; :func:`~convlens.lens.cam.explain` for the other
methods), plus one more explain per true class over the misclassified images; a writer thread
turns each finished shard into a Parquet file (queue of at most ``PENDING_SHARDS``).  Nothing
but the shard being filled and those queues is held, whatever the data set's size.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import ConvlensError
from ..lens.cam import check_layers, default_layer, explain, parse_layers, predict_explain, scale_maps
from ..lens.cam.capture import cam_forward, target_gradients
from ..lens.cam.formulas import GRADIENT_FORMULAS
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
        self.layers: list[str] | None = None  # resolved on the first batch (gradient CAMs only)

    def _gradient_batch(self, x: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """A gradient CAM's maps of the predicted class and of the true class from ONE forward:
        ``(top-k indices, top-k probabilities, predicted maps (n, H, W), true-class maps (n, H, W)
        or None when every label is the prediction, their probabilities (n,))``.

        The numbers are :func:`~convlens.lens.cam.explain`'s for each target (the same forward,
        per-target gradients and per-map scaling); only the second backward, through the head of
        the network alone, is added when some image's label differs from its prediction, instead
        of a second forward and backward for those images."""
        lm = self.lm
        if self.layers is None:
            self.layers = [default_layer(lm)] if self.layer is None else check_layers(lm, parse_layers(self.layer))
        module = lm.module
        was_training = module.training
        flags = [p.requires_grad for p in module.parameters()]
        try:
            module.eval()
            logits, acts = cam_forward(module, x, self.layers, gradients=True)
            probs = logits.detach().float().softmax(dim=-1)
            top_p, top_i = probs.topk(self.k, dim=-1)
            pred = top_i[:, :1]
            wrong = (labels >= 0) & (labels != pred[:, 0])
            targets = torch.cat([pred, torch.where(wrong, labels, pred[:, 0])[:, None]], dim=1) if wrong.any() else pred
            grads = target_gradients(logits, acts, targets)
            formula = GRADIENT_FORMULAS[self.method]
            maps = scale_maps([formula(acts[n].detach(), grads[n]) for n in self.layers], tuple(x.shape[-2:]))
        finally:
            module.train(was_training)
            for p, flag in zip(module.parameters(), flags):
                if p.requires_grad != flag:
                    p.requires_grad_(flag)
        true_maps = maps[:, 1] if targets.shape[1] > 1 else None
        prob_true = probs.gather(1, targets[:, -1:])[:, 0]
        return top_i, top_p, maps[:, 0], true_maps, prob_true

    def _maps(self, x: torch.Tensor, target: Any) -> tuple[torch.Tensor, list[float]]:
        ex = explain(self.lm, x, self.method, target=target, layer=self.layer, batch_size=x.shape[0])
        return ex.heatmaps[:, 0], [row[0].probability for row in ex.targets]

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
        if self.method in GRADIENT_FORMULAS:
            lab_t = torch.tensor(labels, dtype=torch.long, device=x.device)
            ti, tp, pred_maps, true_maps, prob_true = self._gradient_batch(x, lab_t)
            top_i, top_p = ti.cpu().tolist(), tp.cpu().tolist()
            pred = [t[0] for t in top_i]
            pt = prob_true.cpu().tolist()
            prob_label: list[float | None] = [pt[j] if labels[j] >= 0 else None for j in range(len(good))]
            maps = true_maps if (use_label and true_maps is not None) else pred_maps
        else:
            pred_maps, _ = self._maps(x, None)
            probs = lm.probabilities(x)
            v, ix = probs.topk(self.k, dim=-1)
            top_i, top_p = ix.cpu().tolist(), v.cpu().tolist()
            pred = [t[0] for t in top_i]
            maps = pred_maps.clone()
            prob_label = [top_p[j][0] if labels[j] == pred[j] else None for j in range(len(good))]
            need = sorted({lab for lab, p in zip(labels, pred) if lab >= 0 and lab != p})
            for lab in need:  # one explain per true class over the images the model got wrong
                idx = [j for j in range(len(good)) if labels[j] == lab and pred[j] != lab]
                m, pr = self._maps(x[idx], int(lab))
                for j, mj, pj in zip(idx, m, pr):
                    prob_label[j] = pj
                    if use_label:
                        maps[j] = mj
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
            with ThreadPoolExecutor(max(1, workers), thread_name_prefix="convlens-audit-decode") as pool:
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
