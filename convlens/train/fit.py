"""The training loop, on Lightning Fabric.

``train(data, arch=..., augment=..., out=RUN)`` reads a data source, splits it
(seeded, stratified), trains with AdamW and a one-cycle (or cosine) schedule,
keeps the best checkpoint by validation loss, stops early (patience) or at a goal
(``stop_at="accuracy=0.99"``), evaluates once on the test split and returns a
:class:`~convlens.models.run.Run` (written atomically to ``out`` when given).
Augmentation touches the training split only.  With a pretrained backbone and
``freeze=True`` the backbone's features are computed once and only the head is
trained on them; ``finetune_epochs`` then trains everything at a lower rate.

Reproducible: the same seed, data and options give bitwise-identical weights and metrics in
another process on the same CPU with the same torch version and thread count (splits, shuffling,
augmentation and dropout all draw from seeded generators; file order is sorted; torch's
deterministic algorithms are on while training). What cannot be made identical: a different
thread count (``torch.get_num_threads()``, recorded in ``config.json`` under ``reproducibility``)
sums floats in another order and so differs in the last bits, as do other CPUs or torch versions;
on GPUs some kernels (atomics in scatter/index backward, cuDNN autotuning) have no deterministic
form, and torch only warns about those.

>>> run = train("digits", arch="conv16-bn-pool-conv32-bn-pool-gap", epochs=3,
...             progress=False)                                   # doctest: +SKIP
>>> run.metrics["accuracy"] > 0.8                                 # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from ..data.augment import Augment, parse_augment
from ..data.sources import ImageSet, load_source, parse_size, resize_set
from ..data.splits import make_split
from ..errors import RunError, SpecError
from ..models.arch import DEFAULT_ARCH, TransferNet, build_arch, frozen_modules, parse_arch
from ..models.arch import freeze_until as freeze_until_layer
from ..models.run import Run, check_out, library_versions, now_iso
from ..options import TrainOptions as TrainBounds
from ..options import check_options
from ..render.files import NoSpaceError, lock_output, no_space
from .checkpoint import (
    Checkpoint,
    describe_unfinished,
    load_unfinished,
    restore_optimizer,
    restore_rng,
    restore_scheduler,
    unfinished,
    write_unfinished,
)
from .checkpoint import Writer as CheckpointWriter
from .checkpoint import read as read_checkpoint
from .checkpoint import take as take_checkpoint
from .checkpoint import write as write_checkpoint
from .defaults import default_augment, is_auto
from .defaults import describe as describe_augment
from .evaluate import metrics_from_logits

STOP_KEYS = {"accuracy": "val_accuracy", "val_accuracy": "val_accuracy", "train_accuracy": "train_accuracy",
             "loss": "val_loss", "val_loss": "val_loss", "train_loss": "train_loss"}


@dataclass
class TrainOptions:
    """Everything that shapes a training run (saved in the run's config.json)."""

    arch: str = DEFAULT_ARCH
    augment: str = ""
    epochs: int = 40
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    seed: int = 0
    val: float = 0.1
    test: float = 0.2
    patience: int | None = 15
    stop_at: dict[str, float] = field(default_factory=dict)
    freeze: bool = False
    freeze_until: str | None = None
    size: list[int] | None = None
    finetune_epochs: int = 0
    finetune_lr: float | None = None
    label_smoothing: float = 0.0
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> "TrainOptions":
        """Refuse values that cannot train (one line naming the option), before any data is read."""
        _count("epochs", self.epochs, 1)
        _count("batch_size", self.batch_size, 1)
        _count("finetune_epochs", self.finetune_epochs, 0)
        _count("seed", self.seed, 0, 2**32 - 1)
        if self.patience is not None:
            _count("patience", self.patience, 0)
        for name in ("lr", "finetune_lr"):
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), low=0.0)  # 0 is allowed: a frozen baseline
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        _number("val", self.val, low=0.0, high=1.0, high_open=True)
        _number("test", self.test, low=0.0, high=1.0, high_open=True)
        if self.val + self.test >= 1:
            raise SpecError(f"val {self.val:g} and the test fraction {self.test:g} add up to "
                            f"{self.val + self.test:g}; together they must be under 1 to leave images to train on",
                            param="val")
        if self.schedule not in SCHEDULES:
            raise SpecError(f"schedule {self.schedule!r}: use {', '.join(SCHEDULES)}", param="schedule")
        for key, goal in self.stop_at.items():
            if not math.isfinite(goal):
                raise SpecError(f"stop_at: {key}={goal} is not a finite number", param="stop_at")
        # the declared bounds (convlens.options.TrainOptions): no run asks for more than they allow
        check_options(TrainBounds, epochs=int(self.epochs), batch_size=int(self.batch_size), lr=self.lr,
                      weight_decay=float(self.weight_decay), val=float(self.val), test=float(self.test),
                      patience=15 if self.patience is None else int(self.patience),
                      finetune_epochs=int(self.finetune_epochs), seed=int(self.seed))
        return self


SCHEDULES = ("onecycle", "cosine", "constant")
#: below this many optimizer steps in a phase, "onecycle" falls back to a constant rate
ONECYCLE_MIN_STEPS = 5


def _count(name: str, value: Any, low: int, high: int | None = None) -> None:
    """An integer option: a whole number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            ok = float(value).is_integer()
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise SpecError(f"{name} must be a whole number (got {value!r})", param=name)
        value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise SpecError(f"{name} must be {bound} (got {value})", param=name)


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    """A real-valued option: finite, and within its range (open or closed at each end)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number (got {value!r})", param=name) from None
    bad = not math.isfinite(v)
    bad = bad or (low is not None and (v <= low if low_open else v < low))
    bad = bad or (high is not None and (v >= high if high_open else v > high))
    if bad:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
        rng = " and ".join(x for x in (lo, hi) if x)
        raise SpecError(f"{name} must be a finite number {rng} (got {value})", param=name)


def parse_stop_at(spec: "str | dict[str, float] | None") -> dict[str, float]:
    """``"accuracy=0.99"`` -> ``{"val_accuracy": 0.99}`` (accuracy/loss mean validation)."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for tok in str(spec).split(","):
            k, eq, v = tok.strip().partition("=")
            if not eq:
                raise SpecError(f"stop_at: token {tok.strip()!r} must look like accuracy=0.99", param="stop_at")
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        if k not in STOP_KEYS:
            raise SpecError(f"stop_at: unknown metric {k!r}; use one of {', '.join(STOP_KEYS)}", param="stop_at")
        try:
            out[STOP_KEYS[k]] = float(v)
        except ValueError:
            raise SpecError(f"stop_at: {k}={v!r} is not a number", param="stop_at") from None
    return out


class _Reporter:
    """Rich progress bar over all steps, with one Keras-like line per epoch."""

    def __init__(self, enabled: bool, console: Any, total: int):
        self.progress = None
        self.console = console
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("training", total=total)

    def step(self, n: int = 1) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def epoch(self, row: dict[str, Any], total_epochs: int) -> None:
        if not self.progress:
            return
        val = (f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}"
               if row.get("val_loss") is not None else "")
        line = (f"{row['phase']} {row['epoch']}/{total_epochs} loss {row['train_loss']:.4f} "
                f"acc {row['train_accuracy']:.4f}{val} {row['seconds']:.1f}s" + (" *" if row.get("best") else ""))
        self.progress.update(self.task, description=f"{row['phase']} {row['epoch']}/{total_epochs} "
                                                    f"acc {row['train_accuracy']:.3f}")
        self.progress.console.print(line, highlight=False, soft_wrap=True)

    def features(self, total: int):
        """A second bar for the one-off feature pass; returns its per-batch callback."""
        if not self.progress:
            return None
        task = self.progress.add_task("backbone features (once)", total=total)
        return lambda n: self.progress.advance(task, n)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()


class _CachedHead(nn.Module):
    """Frozen backbone forward (eval, no grad) then the trainable classifier."""

    def __init__(self, net: TransferNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.net.adapter.eval()
            self.net.backbone.eval()
            f = self.net.features(x)
        return self.net.classifier(f)


@torch.no_grad()
def _predict_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device,
                     batch_size: int = 256, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    outs = []
    for i in range(0, len(x), batch_size):
        outs.append(fn(x[i:i + batch_size].to(device).float()).float())
        if on_batch is not None:
            on_batch(len(outs[-1]))
    return torch.cat(outs) if outs else torch.empty(0)


def _phase(fabric, module: nn.Module, params: list[nn.Parameter], *, phase: str, x_train: torch.Tensor,
           y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, epochs: int, lr: float,
           opts: TrainOptions, augment: Augment | None, reporter: _Reporter, history: list[dict[str, Any]],
           best: dict[str, Any], state_of: Callable[[], dict[str, torch.Tensor]], seed_offset: int,
           keep_eval: Sequence[nn.Module] = (), resume: Checkpoint | None = None,
           keep: dict[str, Any] | None = None) -> str:
    """Train ``params`` of ``module`` for up to ``epochs``; returns why it stopped (``keep_eval``:
    frozen modules left in eval mode, so their batch norms keep their statistics).

    Data-parallel: each of the ``fabric.world_size`` processes trains on its shard of the
    training split (a seeded :class:`~torch.utils.data.DistributedSampler`, the one Fabric puts in a
    data loader, reshuffled every epoch; shards are padded to the same length so that every process
    takes the same number of steps); the training loss and accuracy are summed over the processes;
    the validation split is evaluated once, by process 0, and its row is sent to every process, so
    that all of them take the same early-stopping and best-epoch decisions.  ``resume``: the
    checkpoint of an earlier run of this phase (its optimiser, schedule and random generators are
    restored; the weights were loaded by the caller).  ``keep["last"]`` receives, on process 0,
    the checkpoint of every complete epoch, and ``keep["save"]``, when set, writes it."""
    if epochs <= 0:
        return "completed"
    device = fabric.device
    rank, world = fabric.global_rank, fabric.world_size
    n = len(y_train)
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                 seed=opts.seed * 1000 + seed_offset, drop_last=False)
    per_process = len(sampler)
    bs = max(1, min(opts.batch_size, per_process))
    steps = math.ceil(per_process / bs)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=opts.weight_decay)
    if opts.schedule == "onecycle" and epochs * steps < ONECYCLE_MIN_STEPS:
        # too few steps for a warm-up and an annealing phase (torch's OneCycleLR divides by zero
        # below 5 steps): a tiny run trains at the peak rate throughout
        sched = None
    elif opts.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.25)
    elif opts.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    elif opts.schedule == "constant":
        sched = None
    else:
        raise SpecError(f"schedule {opts.schedule!r}: use onecycle, cosine or constant", param="schedule")
    fmodule, opt = fabric.setup(module, opt, move_to_device=True)
    aug_gen = torch.Generator().manual_seed(opts.seed * 1000 + seed_offset + 1)
    # one process draws each epoch's order from one seeded generator, as convlens always has (the
    # same weights as before for the same seed); several take their shards from the sampler
    order_gen = torch.Generator().manual_seed(opts.seed * 1000 + seed_offset) if world == 1 else None
    y_val_d = y_val.to(device)
    since_best = 0
    first = 1
    if resume is not None and resume.phase == phase:
        restore_optimizer(resume, opt, params)
        restore_scheduler(resume, sched)
        restore_rng(resume, aug_gen)
        since_best = int(resume.state["since_best"])
        first = resume.epoch + 1
        reporter.step(steps * resume.epoch)
    for _ in range(first - 1 if order_gen is not None else 0):
        torch.randperm(n, generator=order_gen)  # a resumed run replays the orders of the epochs done
    for epoch in range(first, epochs + 1):
        t0 = time.perf_counter()
        fmodule.train()
        for m in keep_eval:
            m.eval()
        if order_gen is not None:
            order = torch.randperm(n, generator=order_gen)
        else:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            if len(idx) < 2 and len(order) > 1:
                continue  # batch norm needs two samples (the same batch on every process: equal shards)
            xb = x_train[idx].to(device, non_blocking=True)
            yb = y_train[idx].to(device, non_blocking=True)
            if augment is not None:
                xb = augment(xb, generator=aug_gen)
            logits = fmodule(xb.float())
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=opts.label_smoothing)
            opt.zero_grad(set_to_none=True)
            fabric.backward(loss)
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(-1) == yb).sum()
            seen += len(idx)
            reporter.step()
        if world > 1:  # the epoch's figures over every process's shard
            totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=device,
                                                                                   dtype=torch.float64)])
            loss_sum, correct, seen_t = fabric.all_reduce(totals, reduce_op="sum")
            seen = int(seen_t)
        row: dict[str, Any] = {"phase": phase, "epoch": epoch, "train_loss": float(loss_sum) / max(seen, 1),
                               "train_accuracy": float(correct) / max(seen, 1), "val_loss": None,
                               "val_accuracy": None, "lr": opt.param_groups[0]["lr"]}
        fmodule.eval()
        if len(y_val) and rank == 0:
            # the plain module (no DDP wrapper: its forward would wait for the other processes)
            with fabric.autocast():
                logits = _predict_batches(lambda t: module(t.float()), x_val, device)
            row["val_loss"] = float(F.cross_entropy(logits, y_val_d))
            row["val_accuracy"] = float((logits.argmax(-1) == y_val_d).float().mean())
        row["seconds"] = time.perf_counter() - t0
        if world > 1:
            row = fabric.broadcast(row, src=0)  # every process decides on process 0's figures
        score = row["val_loss"] if row["val_loss"] is not None else row["train_loss"]
        improved = score < best.get("score", math.inf) - 1e-6 or (
            score <= best.get("score", math.inf) + 1e-6 and (row["val_accuracy"] or 0) > best.get("acc", -1))
        row["best"] = bool(improved)
        if improved:
            best.update(score=score, acc=row["val_accuracy"] or 0, epoch=len(history) + 1,
                        state=state_of())
            since_best = 0
        else:
            since_best += 1
        history.append(row)
        if keep is not None and rank == 0:
            keep["last"] = take_checkpoint(phase=phase, epoch=epoch, model_state=state_of(), optimizer=opt,
                                           scheduler=sched, aug_gen=aug_gen, history=history, best=best,
                                           since_best=since_best)
            if keep.get("save") is not None:
                keep["save"](keep["last"])
        reporter.epoch(row, epochs)
        for key, goal in opts.stop_at.items():
            v = row.get(key)
            if v is not None and ((v <= goal) if key.endswith("loss") else (v >= goal)):
                reporter.step(steps * (epochs - epoch))
                return "goal"
        if opts.patience and len(y_val) and since_best >= opts.patience:
            reporter.step(steps * (epochs - epoch))
            return "early-stopping"
    return "completed"


def _learning_rate(opts: TrainOptions, kind: str) -> float:
    """The rate a phase starts from: the caller's, else 3e-3 for spec nets and frozen-backbone
    heads, 1e-3 for a whole pretrained backbone."""
    if opts.lr is not None:
        return opts.lr
    return 3e-3 if kind == "spec" or opts.freeze else 1e-3


CHANCE_MARGIN = 0.02  # a best validation accuracy within this of the largest class's share is chance


def chance_hint(history: Sequence[dict[str, Any]], y_val: torch.Tensor, num_classes: int, *, lr: float | None,
                input_size: Sequence[int], epochs: int, best_epoch: int | None = None) -> str | None:
    """What to change when a run learned nothing: the validation accuracy of the epoch it keeps
    (``best_epoch``, 1-based; the best of all epochs when None) is no better than always answering
    the largest class.  None when it learned, or when there is no validation split.

    The usual causes, in the order worth trying: a learning rate too high for the net (the loss
    jumps and the net settles on one class), images larger than a small net's dense head can use
    (a one-block net on 224x224 feeds 400,000 values to one layer), too few epochs.  On DeFungi
    (64x64 copies, 3 epochs) the one-block net reaches 0.94 at the default rate 3e-3 and keeps a
    chance-level epoch (val 0.528, test 0.526) at a constant 3e-2."""
    if len(y_val) == 0:
        return None
    if best_epoch is not None and 1 <= best_epoch <= len(history):
        acc = history[best_epoch - 1].get("val_accuracy")
    else:
        acc = max((r["val_accuracy"] for r in history if r.get("val_accuracy") is not None), default=None)
    if acc is None:
        return None
    majority = float(torch.bincount(y_val.long(), minlength=num_classes).max()) / len(y_val)
    if acc > majority + CHANCE_MARGIN:
        return None
    tips = ["a learning rate above 0 (--lr 3e-3)" if lr == 0
            else f"a lower learning rate (--lr {(lr or 3e-3) / 3:.2g})"]
    h, w = int(input_size[-2]), int(input_size[-1])
    if h * w > 64 * 64:
        tips.append(f"smaller images (--size 64x64; these are {w}x{h})")
    tips.append(f"more epochs (--epochs {max(2 * epochs, 10)})")
    which = f"the kept epoch's ({best_epoch}) validation accuracy" if best_epoch else "best validation accuracy"
    return (f"the model learned nothing: {which} {acc:.3f} is chance (always answering the largest class "
            f"gives {majority:.3f}); try " + ", ".join(tips[:-1]) + f" or {tips[-1]}")


def _lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` says that another process of a data-parallel run went away mid-collective."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        w in text for w in ("connection closed", "connection reset", "broken pipe", "gloo", "nccl"))


def _shared_features(fabric, net: TransferNet, x: torch.Tensor, reporter: _Reporter) -> torch.Tensor:
    """The frozen backbone's features of ``x``, computed once: with several processes each computes
    a block of ``len(x) / world`` images and every process receives all of them (padded blocks of equal
    length, gathered in rank order), since every process's shard is drawn anew from all of them."""
    rank, world = fabric.global_rank, fabric.world_size
    if world == 1:
        return _predict_batches(net.features, x, fabric.device, batch_size=64,
                                on_batch=reporter.features(len(x))).cpu()
    per = math.ceil(len(x) / world)
    idx = torch.arange(rank * per, (rank + 1) * per).clamp_max(len(x) - 1)  # the last block padded
    mine = _predict_batches(net.features, x[idx], fabric.device, batch_size=64, on_batch=reporter.features(per))
    gathered = fabric.all_gather(mine.contiguous())  # (world, per, features)
    return gathered.reshape(world * per, -1)[: len(x)].cpu()


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    x = images.float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


#: the strategies convlens trains with: one process, or one replica of the model per process (data-parallel)
STRATEGIES = ("auto", "ddp")
#: the fields of a data source's record that a resumed run's data must match
SOURCE_KEYS = ("kind", "path", "label", "scale", "size", "digest")
#: the options a resumed run may change: they shape neither its data, nor its model, nor its schedule
RESUME_OPTIONS = ("patience", "stop_at", "accelerator", "devices", "num_nodes", "strategy", "precision")


def global_rank() -> int:
    """This process's rank in a data-parallel run (0 when there is none): only rank 0 prints."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_fabric(opts: TrainOptions):
    """The Lightning Fabric for ``opts``, refusing in one line (naming the option) what cannot run
    here: more devices than the machine has, an accelerator it lacks, a strategy the accelerator
    cannot run or that is not data-parallel.  Built before any data is read: a refusal costs nothing.

    On CPU a device is a process (gloo); ``devices`` above the usable cores is refused, since
    processes that share a core only wait for each other."""
    from lightning_fabric import Fabric

    if not isinstance(opts.strategy, str):
        raise SpecError(f"strategy must be a name (got {opts.strategy!r})", param="strategy")
    _count("num_nodes", opts.num_nodes, 1)
    dev = opts.devices
    if isinstance(dev, str) and dev.strip().lstrip("-").isdigit():
        dev = int(dev)
    if isinstance(dev, int) and not isinstance(dev, bool):
        if dev == 0 or dev < -1:
            raise SpecError(f"devices must be at least 1, -1 (all) or auto (got {dev})", param="devices")
        acc = str(opts.accelerator).lower()
        if acc == "cpu" and dev > _usable_cores():
            raise SpecError(f"devices {dev}: this machine has {_usable_cores()} usable CPU core(s), and on CPU each "
                            f"device is a process; use at most {_usable_cores()}", param="devices")
        if acc in ("cuda", "gpu") and torch.cuda.is_available() and dev > torch.cuda.device_count():
            raise SpecError(f"devices {dev}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                            param="devices")
    try:
        fabric = Fabric(accelerator=opts.accelerator, devices=dev, num_nodes=opts.num_nodes,
                        strategy=opts.strategy, precision=opts.precision)
    except (ValueError, RuntimeError, TypeError, ImportError) as exc:  # Fabric's refusals: its first line
        text = " ".join(str(exc).split())
        low = text.lower()
        param = ("strategy" if "strateg" in low or "fsdp" in low or "deepspeed" in low
                 else "precision" if "precision" in low
                 else "devices" if "devices" in low and "can not run" not in low else "accelerator")
        value = getattr(opts, param)
        raise SpecError(f"{param} {value!r}: {text[:300]}", param=param) from None
    from lightning_fabric.strategies import DDPStrategy

    if isinstance(fabric.strategy, DDPStrategy):
        # batch-norm statistics are not sent from process 0 before every forward (one collective fewer
        # per step): training uses each batch's own statistics, and only process 0's running ones are
        # ever used (it alone evaluates) or saved, and those are the same either way
        fabric = Fabric(accelerator=opts.accelerator, devices=dev, num_nodes=opts.num_nodes,
                        strategy=DDPStrategy(broadcast_buffers=False, gradient_as_bucket_view=True),
                        precision=opts.precision)
    if opts.strategy not in STRATEGIES:
        raise SpecError(f"strategy {opts.strategy!r}: convlens trains with {' or '.join(STRATEGIES)} (one model "
                        "replica per process, started by Fabric, torchrun or SLURM)", param="strategy")
    return fabric


def _run_config(fabric, opts: TrainOptions, info: Any, ds: ImageSet, split: Any, mean: list[float], std: list[float],
                frozen: Sequence[str]) -> dict[str, Any]:
    """A run's ``config.json`` but its ``result``: known before the first epoch (an unfinished run's
    folder holds it, :func:`~convlens.train.checkpoint.write_unfinished`)."""
    world = fabric.world_size
    config = {
        "format": "convlens-run", "version": 1, "created": now_iso(),
        "arch": {"kind": info.kind, "spec": info.spec, "backbone": info.backbone},
        "class_names": list(ds.class_names), "input_size": list(ds.input_size),
        "normalization": {"mean": mean, "std": std},
        "data": {**ds.source, "n": len(ds), "skipped": ds.skipped},
        "split": {"file": "splits.json", "val": opts.val, "test": opts.test, "given_test": split.given_test,
                  "seed": opts.seed, **split.sizes()},
        "train": opts.to_dict(),
        "result": None,  # set at the end (``{"stopped": "unfinished"}`` in an unfinished run's folder)
        "distributed": {"world_size": world, "num_nodes": opts.num_nodes, "processes_per_node": world // opts.num_nodes,
                        "strategy": type(fabric.strategy).__name__, "device": fabric.device.type,
                        "batch_size": {"per_process": opts.batch_size, "global": opts.batch_size * world}},
        "versions": library_versions(),
        "reproducibility": {"seed": opts.seed, "threads": torch.get_num_threads(), "deterministic": True},
    }
    if frozen:
        config["train"]["frozen"] = {"layers": sorted({n.rsplit(".", 1)[0] for n in frozen}), "params": len(frozen)}
    return config


def _check_out_dir(out: "str | os.PathLike | None", force: bool) -> None:
    """The run directory may be written (checked before any work; see :func:`_write_run_dir`); the
    folder of an unfinished run (killed) is refused, in one line saying how to continue it, unless ``force``."""
    if out is None:
        return
    state = None if force else unfinished(out)
    if state is not None:
        lock_output(out)  # a process still training there is named instead
        raise RunError(f"{describe_unfinished(out, state)}; continue it with `convlens train --resume {out}`, "
                       "or pass force to replace it", param="force")
    check_out(out, force)


def _write_run_dir(run: Run, out: "str | os.PathLike", force: bool, last: Checkpoint | None) -> None:
    """Write the run directory (atomically: :meth:`Run.save`), then the checkpoint of its last
    complete epoch when it stopped before its last one.  Called by process 0 only."""
    try:
        run.save(out, force=force)
    except NoSpaceError as exc:
        state = unfinished(out)
        if state is None:
            raise
        raise NoSpaceError(f"{exc}; the checkpoint of {state.get('phase')} epoch {state.get('epoch')} is kept: "
                           f"then continue with `convlens train --resume {out}`") from None
    if last is not None:
        write_checkpoint(run.path, last)


def _resume_plan(resume: "str | os.PathLike", data: Any, arch: str | None, given: dict[str, Any],
                 defaults: dict[str, Any], options: dict[str, Any]) -> tuple[Run, Checkpoint, dict[str, Any]]:
    """The run to continue, its checkpoint and its recorded options (with the ones a resume may
    change); RunError (one line, nothing written) when it is not a run, holds no checkpoint, or
    when the data, the architecture or an option given differs from the run's."""
    prior = load_unfinished(resume) if unfinished(resume) is not None else Run.load(resume, weights=False)
    ckpt = read_checkpoint(resume)
    recorded = {k: v for k, v in (prior.config.get("train") or {}).items() if k in TrainOptions.__dataclass_fields__}
    rec_spec = prior.config["arch"]["spec"]
    if arch is not None and parse_arch(arch).spec != rec_spec:
        raise RunError(f"arch {parse_arch(arch).spec!r}: {resume} was trained with {rec_spec!r}; leave the arch out "
                       "to continue it", param="arch")
    if data is not None:
        src = load_source(data, label=given.get("label"), scale=given.get("scale")).source
        rec = prior.config.get("data") or {}
        hw = parse_size(given.get("size"))
        src = {**src, "size": list(hw) if hw else None}
        diff = [k for k in SOURCE_KEYS if (src.get(k) or None) != (rec.get(k) or None)]
        if diff:
            k = diff[0]
            shown = data if isinstance(data, str) else type(data).__name__
            raise RunError(f"data {shown!r}: {resume} was trained on other data ({rec.get('spec', rec.get('kind'))}: "
                           f"{k} {rec.get(k)!r}, given {src.get(k)!r}); leave the data out to continue it on its own",
                           param="data")
    for name, value in given.items():
        if name in ("label", "scale") or name not in recorded or value == defaults.get(name):
            continue
        want = recorded[name]
        if name == "augment":
            value = parse_augment(value).spec
        if name == "size":
            value = None if value is None else list(parse_size(value))
        if value != want:
            raise RunError(f"{name} {value!r}: a resumed run keeps its recorded {name} ({want!r}); only "
                           f"{', '.join(RESUME_OPTIONS)} may change", param=name)
    for name, value in options.items():
        if name not in RESUME_OPTIONS and name in recorded and value != recorded[name]:
            raise RunError(f"{name} {value!r}: a resumed run keeps its recorded {name} ({recorded[name]!r}); only "
                           f"{', '.join(RESUME_OPTIONS)} may change", param=name)
    merged = {**recorded, **{k: v for k, v in options.items() if k in RESUME_OPTIONS}}
    return prior, ckpt, merged


def train(data: "str | ImageSet | None" = None, *, label: str | None = None, scale: int | None = None,
          arch: str | None = None, augment: "str | Augment | None" = None, epochs: int = 40,
          batch_size: int = 32, lr: float | None = None, seed: int = 0, out: str | None = None,
          force: bool = False, progress: bool = True, console: Any = None, preview: bool = False,
          class_names: "Sequence[str] | None" = None, size: Any = None, freeze_until: str | None = None,
          resume: "str | os.PathLike | None" = None, **options: Any):
    """Train a classifier on ``data`` and return a :class:`~convlens.models.run.Run`.

    ``data``: a source spec (``"mnist:PATH"``, ``"folder:PATH"``, ``"digits"``...), an
    :class:`ImageSet`, or arrays as a notebook holds them: ``(X, y)`` with ``X`` ``(N, H, W[, C])``
    uint8 or float and ``y`` integer labels, or ``((X_train, y_train), (X_test, y_test))`` (the
    given test split), named by ``class_names``; the run keeps the arrays (``data.safetensors``)
    so that :func:`~convlens.train.evaluate` reads them again. ``size``: ``"WxH"`` (width x height; or an
    ``(h, w)`` tuple)
    trains on resized copies (recorded: the run re-reads its data at that size).
    ``freeze_until``: a layer name (``convlens layers``); it and every layer before it are frozen
    (not trained, batch norms kept in eval mode).  ``arch`` defaults to :data:`DEFAULT_ARCH`.
    ``augment``: a spec (``"rotate=10,translate=0.1"``), None for none, or ``"auto"`` (the CLI's
    default): :data:`~convlens.train.defaults.SMALL_DATA_AUGMENT` for a CNN trained from scratch on
    under 1,000 training images, else none (:mod:`convlens.train.defaults`; recorded as chosen).

    ``options`` are the other :class:`TrainOptions` fields (``val``, ``test``, ``patience``,
    ``stop_at``, ``freeze``, ``finetune_epochs``, ``schedule``, ``weight_decay``,
    ``accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision``...).  ``preview``:
    also keep a 3x3 grid of augmented copies of the first training image (``run.preview``,
    written into the run directory as ``augment_preview.png``) when ``augment`` is given.

    Several processes (``devices=N``, ``num_nodes=M``, ``strategy="ddp"``): Fabric starts them by
    running the program again (or finds them started by ``torchrun`` or SLURM); each trains on its
    shard of the training split; ``batch_size`` is per process (the global batch is
    ``batch_size * N * M``) and the learning rate is used as given, not scaled; only process 0
    prints and writes ``out``, every process returns the Run (the same metrics).

    ``resume``: a run directory that stopped before its last epoch (interrupted, early stopping,
    a goal, or killed: from the first complete epoch on, ``out`` holds the checkpoint of the last one,
    in a folder marked unfinished until the run ends); training continues from its checkpoint with
    its recorded data and options (``data``
    and ``arch``, when given, must be the run's; ``patience``, ``stop_at`` and the device options
    may change) and the run directory is replaced by the continued run.  On CPU in one process with
    the same thread count the result is bitwise the run that was never interrupted.
    """
    t_start = time.perf_counter()
    unknown = set(options) - {f for f in TrainOptions.__dataclass_fields__}
    if unknown:
        raise SpecError(f"train(): unknown option(s) {', '.join(sorted(unknown))}; the options are "
                        f"{', '.join(sorted(TrainOptions.__dataclass_fields__))}")
    prior: Run | None = None
    ckpt: Checkpoint | None = None
    if resume is not None:
        given = dict(label=label, scale=scale, augment=None if is_auto(augment) else augment, epochs=epochs,
                     batch_size=batch_size, lr=lr, seed=seed, size=size, freeze_until=freeze_until)
        defaults = dict(label=None, scale=None, augment=None, epochs=40, batch_size=32, lr=None, seed=0, size=None,
                        freeze_until=None)
        if isinstance(options.get("stop_at"), str):
            options["stop_at"] = parse_stop_at(options["stop_at"])
        prior, ckpt, recorded = _resume_plan(resume, data, arch, given, defaults, options)
        arch, augment, size = recorded.pop("arch"), recorded.pop("augment"), recorded.pop("size")
        epochs, batch_size, lr = recorded.pop("epochs"), recorded.pop("batch_size"), recorded.pop("lr")
        seed, freeze_until = recorded.pop("seed"), recorded.pop("freeze_until")
        options = recorded
        out, force = str(resume), True
    info = parse_arch(DEFAULT_ARCH if arch is None else arch)
    hw = parse_size(size)
    auto = is_auto(augment)  # resolved once the training split's size is known (convlens.train.defaults)
    aug = Augment() if auto else parse_augment(augment)
    stop_at = parse_stop_at(options.pop("stop_at", None))
    _count("epochs", epochs, 1)
    _count("batch_size", batch_size, 1)
    _count("seed", seed, 0, 2**32 - 1)
    opts = TrainOptions(arch=info.spec, augment=aug.spec, epochs=int(epochs), batch_size=int(batch_size),
                        lr=lr, seed=int(seed), stop_at=stop_at, freeze_until=freeze_until,
                        size=None if hw is None else [hw[0], hw[1]], **options).check()
    if opts.freeze and info.kind != "transfer":
        raise SpecError("freeze needs a pretrained backbone (an arch of effnet-lite0 or timm:NAME)", param="freeze")
    if opts.freeze and freeze_until is not None:
        raise SpecError("freeze_until and freeze: give one (freeze trains the new head only; freeze_until "
                        "freezes the layers up to one you name)", param="freeze_until")
    if freeze_until is not None and not isinstance(freeze_until, str):
        raise SpecError(f"freeze_until must be a layer name (got {freeze_until!r})", param="freeze_until")
    if data is None and prior is None:
        raise SpecError("train(): give data (a source spec, an ImageSet or arrays) or resume (a run directory)",
                        param="data")
    _check_out_dir(out, force)
    fabric = make_fabric(opts)

    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if prior is not None:
        ds, split = prior.dataset()  # the run's own data, its split checked against splits.json
    else:
        ds = resize_set(load_source(data, label=label, scale=scale, class_names=class_names), hw)
        split = make_split(ds, val=opts.val, test=opts.test, seed=opts.seed)  # a data set too small fails here
    if auto:
        aug = parse_augment(default_augment(len(split.train), info.kind))
        opts.augment = aug.spec  # recorded as chosen: a resumed run keeps it

    fabric.launch()  # several processes: Fabric starts the others (or joins those torchrun/SLURM started)
    rank, world = fabric.global_rank, fabric.world_size
    progress = progress and rank == 0
    if auto and progress and describe_augment(len(split.train), info.kind):
        console.print(describe_augment(len(split.train), info.kind), highlight=False, soft_wrap=True)
    threads_before = torch.get_num_threads()
    if world > 1 and fabric.device.type == "cpu":  # the cores shared out between this machine's processes
        torch.set_num_threads(max(1, _usable_cores() // max(1, world // opts.num_nodes)))
    try:
        return _fit(fabric, opts, info, ds, split, aug, prior, ckpt, out=out, force=force, progress=progress,
                    console=console, preview=preview, t_start=t_start)
    finally:
        torch.set_num_threads(threads_before)


def _fit(fabric, opts: TrainOptions, info: Any, ds: ImageSet, split: Any, aug: Augment, prior: Run | None,
         ckpt: Checkpoint | None, *, out: Any, force: bool, progress: bool, console: Any, preview: bool,
         t_start: float) -> Run:
    """The body of :func:`train` once the processes run: model, phases, test metrics, run directory."""
    rank, world = fabric.global_rank, fabric.world_size
    freeze_until = opts.freeze_until
    fabric.seed_everything(opts.seed, verbose=False)
    mean, std = _channel_stats(ds.images[split.train])
    module = build_arch(info, ds.input_size, ds.num_classes, mean=mean, std=std)
    if info.kind == "spec":
        module = module.to(memory_format=torch.channels_last)
    frozen = freeze_until_layer(module, freeze_until) if freeze_until is not None else []
    keep_eval = frozen_modules(module, frozen)
    if progress:  # after the checks that need the model (an unknown freeze_until layer prints nothing)
        console.print(ds.describe() + (f" ({', '.join(ds.skipped_files[:3])}{'...' if ds.skipped > 3 else ''})"
                                       if ds.skipped else ""), highlight=False)
        if world > 1:
            console.print(f"data-parallel: {world} processes ({fabric.device.type}, {torch.get_num_threads()} "
                          f"thread(s) each), batch {opts.batch_size} x {world}", highlight=False, soft_wrap=True)
    trainable = [p for n, p in module.named_parameters() if n not in set(frozen)]
    x_train, y_train = ds.images[split.train], ds.labels[split.train]
    x_val, y_val = ds.images[split.val], ds.labels[split.val]
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    keep: dict[str, Any] = {}
    prior_seconds = 0.0
    if ckpt is not None:
        module.load_state_dict(ckpt.prefixed("model."))
        history = ckpt.history
        best = dict(ckpt.state["best"])
        if any(k.startswith("best.") for k in ckpt.tensors):
            best["state"] = ckpt.prefixed("best.")
        keep["last"] = ckpt
        prior_seconds = float(ckpt.state.get("seconds", 0.0))
        if progress:
            console.print(f"resuming {prior.path} after {ckpt.phase} epoch {ckpt.epoch} "
                          f"({len(history)} epoch(s) done)", highlight=False, soft_wrap=True)
    stopped = "completed"
    aug_or_none = aug if aug.active else None

    def full_state() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def started(phase: str) -> Checkpoint | None:
        return ckpt if ckpt is not None and ckpt.phase == phase else None

    def skipped(phase: str) -> bool:  # resumed in a later phase: this one is done
        return ckpt is not None and ckpt.phase == "finetune" and phase != "finetune"

    per_process = math.ceil(len(y_train) / world)
    steps = lambda e: e * math.ceil(per_process / max(1, min(opts.batch_size, per_process)))  # noqa: E731
    total_steps = steps(opts.epochs) + steps(opts.finetune_epochs if info.kind == "transfer" else 0)
    reporter = _Reporter(progress, console, total_steps)
    timing: dict[str, float] = {}
    config = _run_config(fabric, opts, info, ds, split, mean, std, frozen)
    force_out = [force]
    if out is not None and rank == 0:  # every complete epoch's checkpoint on disk: a run killed hard resumes
        written = {"unfinished": False, "seconds": 0.0}
        writer = CheckpointWriter()

        def save_epoch(last: Checkpoint) -> None:
            t0 = time.perf_counter()
            last.state["seconds"] = round(prior_seconds + t0 - t_start, 2)
            force_out[0] = True  # the folder is (or is becoming) this run's own: its end replaces it
            try:
                if prior is not None or written["unfinished"]:  # the folder exists: only its checkpoint changes
                    writer.write(out, last)
                else:
                    write_unfinished(out, config, split.to_ids(ds),
                                     ds if ds.source.get("kind") == "arrays" else None, last, writer)
                    written["unfinished"] = True
            except OSError as exc:  # a full disk names the run, as the final save does
                err = no_space(exc, out)
                if err is exc:
                    raise
                raise err from None
            written["seconds"] += time.perf_counter() - t0
            timing["checkpoint_seconds"] = round(written["seconds"], 3)

        keep["save"] = save_epoch
    common = dict(opts=opts, reporter=reporter, history=history, best=best, state_of=full_state, keep=keep)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)  # restored below: the caller's setting is theirs
    torch.backends.cudnn.benchmark = False
    try:
        if info.kind == "transfer" and opts.freeze:
            net: TransferNet = module  # type: ignore[assignment]
            for p in net.parameters():
                p.requires_grad_(False)
            head = net.classifier
            for p in head.parameters():
                p.requires_grad_(True)
            head_lr = _learning_rate(opts, info.kind)
            if skipped("head"):
                reporter.step(steps(opts.epochs))
            elif aug_or_none is None:
                net.to(fabric.device).eval()
                x_tv = ds.images[torch.cat([split.train, split.val])]
                t_feat = time.perf_counter()
                feats = _shared_features(fabric, net, x_tv, reporter)
                timing["features_seconds"] = round(time.perf_counter() - t_feat, 2)
                f_train, f_val = feats[: len(split.train)], feats[len(split.train):]
                stopped = _phase(fabric, head, list(head.parameters()), phase="head", x_train=f_train,
                                 y_train=y_train, x_val=f_val, y_val=y_val, epochs=opts.epochs, lr=head_lr,
                                 augment=None, seed_offset=0, resume=started("head"), **common)
            else:
                stopped = _phase(fabric, _CachedHead(net), list(head.parameters()), phase="head",
                                 x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, epochs=opts.epochs,
                                 lr=head_lr, augment=aug_or_none, seed_offset=0, resume=started("head"), **common)
            if opts.finetune_epochs > 0:
                if "state" in best and not skipped("head"):
                    module.load_state_dict(best["state"])
                for p in module.parameters():
                    p.requires_grad_(True)
                ft_lr = opts.finetune_lr or head_lr / 10
                stopped = _phase(fabric, module, list(module.parameters()), phase="finetune", x_train=x_train,
                                 y_train=y_train, x_val=x_val, y_val=y_val, epochs=opts.finetune_epochs,
                                 lr=ft_lr, augment=aug_or_none, seed_offset=7, resume=started("finetune"), **common)
        else:
            base_lr = _learning_rate(opts, info.kind)
            if skipped("train"):
                reporter.step(steps(opts.epochs))
            else:
                stopped = _phase(fabric, module, trainable, phase="train", x_train=x_train,
                                 y_train=y_train, x_val=x_val, y_val=y_val, epochs=opts.epochs, lr=base_lr,
                                 augment=aug_or_none, seed_offset=0, keep_eval=keep_eval, resume=started("train"),
                                 **common)
            if info.kind == "transfer" and opts.finetune_epochs > 0:
                stopped = _phase(fabric, module, trainable, phase="finetune", x_train=x_train,
                                 y_train=y_train, x_val=x_val, y_val=y_val, epochs=opts.finetune_epochs,
                                 lr=opts.finetune_lr or base_lr / 10, augment=aug_or_none, seed_offset=7,
                                 keep_eval=keep_eval, resume=started("finetune"), **common)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except RuntimeError as exc:
        if not (world > 1 and _lost_peer(exc)):
            raise
        # Ctrl-C or SIGTERM reaches every process, and one of them may leave a collective (and end)
        # before the others notice the signal: they see the connection close. The run was interrupted.
        stopped = "interrupted"
    finally:
        reporter.close()
        torch.use_deterministic_algorithms(was_deterministic)
        torch.backends.cudnn.benchmark = was_benchmark
    if stopped == "interrupted" and "state" not in best:
        raise KeyboardInterrupt  # stopped before its first epoch ended: nothing worth writing
    if "state" in best:
        module.load_state_dict(best["state"])
    module = module.cpu().eval()
    frozen_set = set(frozen)
    for n, p in module.named_parameters():
        p.requires_grad_(n not in frozen_set)  # the frozen layers stay frozen (the summary counts them)
    n_params = sum(p.numel() for p in module.parameters())
    if opts.freeze and not opts.finetune_epochs:
        n_trained = sum(p.numel() for p in module.classifier.parameters())  # type: ignore[union-attr]
    else:
        n_trained = sum(p.numel() for p in module.parameters() if p.requires_grad)

    # the test split is evaluated once, by process 0; the other processes receive its figures
    sync = world > 1 and stopped != "interrupted"
    metrics: dict[str, Any] = {}
    if rank == 0:
        x_test, y_test = ds.images[split.test], ds.labels[split.test]
        test_logits = _predict_batches(lambda t: module(t), x_test.float(), torch.device("cpu"))
        metrics = metrics_from_logits(test_logits, y_test, ds.class_names) if len(y_test) else {}
    if sync:
        metrics = fabric.broadcast(metrics, src=0)
    seconds = prior_seconds + time.perf_counter() - t_start
    hint = chance_hint(history, y_val, ds.num_classes, lr=_learning_rate(opts, info.kind),
                       input_size=ds.input_size, epochs=opts.epochs,
                       best_epoch=best.get("epoch"))
    config["created"] = now_iso()
    config["result"] = {"stopped": stopped, "epochs_run": len(history), "best_epoch": best.get("epoch"),
                        "seconds": round(seconds, 2), "params": {"total": n_params, "trainable": n_trained}, **timing}
    if prior is not None:
        config["result"]["resumed"] = (prior.config.get("result") or {}).get("resumed", []) + [
            {"after_epochs": len(ckpt.state["history"]), "at": now_iso()}]
    metrics = {**metrics, "seconds": round(seconds, 2), "stopped": stopped, "best_epoch": best.get("epoch"),
               "epochs_run": len(history)}
    if hint:
        config["result"]["hint"] = metrics["hint"] = hint
    run = Run(config=config, history=history, metrics=metrics, module=module, splits=split.to_ids(ds),
              arrays=ds if ds.source.get("kind") == "arrays" else None)
    if preview and aug.active:
        img = ds.images[int(split.train[0])].permute(1, 2, 0).numpy()
        run.preview = aug.preview(img[..., 0] if img.shape[-1] == 1 else img, seed=opts.seed)
    last = keep.get("last") if stopped != "completed" else None
    if last is not None:
        last.state["seconds"] = round(seconds, 2)
    if out is not None and rank == 0:
        _write_run_dir(run, out, force_out[0], last)
    if sync:
        fabric.barrier()  # the run directory exists before any process returns
    if out is not None and rank != 0:
        run.path = Path(out)
    if progress:
        acc = metrics.get("accuracy")
        console.print(f"{stopped}: {len(history)} epochs in {seconds:.1f}s; test accuracy "
                      f"{acc:.4f} on {metrics.get('n_test', 0)} images" if acc is not None else
                      f"{stopped}: {len(history)} epochs in {seconds:.1f}s (no test split)", highlight=False)
        if hint:
            console.print(f"[yellow]hint:[/] {hint}", highlight=False)
    return run
