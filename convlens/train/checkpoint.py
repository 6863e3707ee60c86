"""The checkpoint of a run's last complete epoch, so that ``convlens train --resume RUN`` continues it.

A checkpoint is what an uninterrupted run would carry from the end of epoch k into epoch k+1: the
current weights (not only the best ones), the optimiser's moments and step counts, the learning-rate
schedule, the random generators (torch's global one, which dropout draws from, the augmentation's,
CUDA's, NumPy's and Python's), the epoch within its phase, the early-stopping counter, the best
epoch's weights and the history.  It lives in the run directory as ``checkpoint/state.json`` (every
plain value) and two safetensors files that it names (every tensor), no pickle: ``"tensors"`` (the
slot, ``state.a.safetensors`` or ``state.b.safetensors``) and ``"base"`` (``base.a.safetensors`` or
``base.b.safetensors``, the tensors as the run's first write found them, with a random ``token``
that ``state.json`` repeats); ``"from_base"`` lists the tensors taken from the base, unchanged since
then bit for bit (a frozen backbone, the best epoch's copy of it): they are not written again.

Written at the end of every complete epoch (process 0 only), so that a run killed hard (SIGKILL, the
out-of-memory killer, a lost machine) continues from its last complete epoch: the tensors go to the
slot that the current ``state.json`` does not name (a temporary name, then a rename; a new base
likewise), then ``state.json`` is replaced the same way, and that rename is the commit.  Killed at
any point, the folder holds a ``state.json`` and the complete files it names: the new epoch's or the
one before.

A fresh run has no run directory until it ends; at the end of its first epoch :func:`write_unfinished`
creates one that says it is unfinished (``config.json`` with ``"result": {"stopped": "unfinished"}``,
``splits.json``, the checkpoint, no weights, so nothing reads it as a trained model) and the later
epochs replace only the checkpoint; the finished run replaces the whole folder.  A resumed run
updates the checkpoint of the folder it continues.  A run that completed every epoch keeps none:
there is nothing left to continue.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import RunError
from ..models.run import ARRAYS_FILE, Run, RunConfig, RunSplits, check_schema, read_json
from ..render.files import MARKER, atomic_write_bytes, pause_point, swap_into_place

CHECKPOINT_DIR = "checkpoint"
TENSORS_FILE = "state.safetensors"  #: the tensors' name in checkpoints written before the slots
SLOTS = ("state.a.safetensors", "state.b.safetensors")  #: where each epoch's tensors go, in turn
BASES = ("base.a.safetensors", "base.b.safetensors")  #: the tensors as a writer first wrote them
STATE_FILE = "state.json"
FORMAT = "convlens-checkpoint"
UNFINISHED = "unfinished"  #: ``result.stopped`` of a run folder whose training has not ended


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def _floats(obj: Any) -> Any:
    """A JSON-ready copy of a scheduler or param-group state (tuples become lists, tensors numbers)."""
    if isinstance(obj, dict):
        return {str(k): _floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_floats(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise RunError(f"checkpoint: cannot record a {type(obj).__name__} in JSON")


def _tuples(obj: Any, like: Any) -> Any:
    """``obj`` read back from JSON, with tuples where ``like`` (the live state) has them."""
    if isinstance(like, tuple) and isinstance(obj, list):
        return tuple(_tuples(o, lk) for o, lk in zip(obj, like))
    if isinstance(like, dict) and isinstance(obj, dict):
        return {k: _tuples(v, like.get(k)) for k, v in obj.items()}
    return obj


@dataclass
class Checkpoint:
    """One epoch's end: ``tensors`` (safetensors) and ``state`` (JSON), see the module docstring."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        return self.state["phase"]

    @property
    def epoch(self) -> int:
        """Epochs of :attr:`phase` completed."""
        return int(self.state["epoch"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.state["history"]]

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        n = len(prefix)
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def take(*, phase: str, epoch: int, model_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
         scheduler: Any, aug_gen: torch.Generator, history: list[dict[str, Any]], best: dict[str, Any], since_best: int,
         extra: dict[str, Any] | None = None) -> Checkpoint:
    """The state at the end of ``epoch`` of ``phase`` (copies of every tensor)."""
    tensors = {f"model.{k}": _cpu_copy(v) for k, v in model_state.items()}
    if "state" in best:
        tensors.update({f"best.{k}": _cpu_copy(v) for k, v in best["state"].items()})
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = _cpu_copy(v)
            else:
                opt_scalars.setdefault(str(idx), {})[k] = _floats(v)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.augment"] = aug_gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_state = random.getstate()
    state = {
        "format": FORMAT, "version": 1, "phase": phase, "epoch": int(epoch), "since_best": int(since_best),
        "best": {k: best[k] for k in ("score", "acc", "epoch") if k in best},
        "history": [dict(r) for r in history],
        "optimizer": {"param_groups": _floats(opt["param_groups"]), "scalars": opt_scalars,
                      "indices": sorted(int(i) for i in opt["state"])},
        "scheduler": None if scheduler is None else _floats(scheduler.state_dict()),
        "rng": {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "python": [py_state[0], list(py_state[1]), py_state[2]]},
        **(extra or {}),
    }
    return Checkpoint(tensors, state)


def restore_optimizer(ckpt: Checkpoint, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Load the optimiser's state; each moment takes its parameter's memory layout (channels-last
    convolutions), as the uninterrupted run's moments have, so that every later step is the same."""
    live = optimizer.state_dict()
    saved = ckpt.state["optimizer"]
    per: dict[int, dict[str, Any]] = {}
    for key, t in ckpt.prefixed("optim.").items():
        idx, _, name = key.partition(".")
        per.setdefault(int(idx), {})[name] = t
    for idx, scalars in saved["scalars"].items():
        per.setdefault(int(idx), {}).update(scalars)
    groups = _tuples(saved["param_groups"], live["param_groups"])
    if len(groups) != len(live["param_groups"]):
        raise RunError("checkpoint: the optimiser's parameter groups do not fit this model")
    optimizer.load_state_dict({"state": per, "param_groups": groups})
    for p in params:
        st = optimizer.state.get(p, {})
        for k, v in list(st.items()):
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.dim() == 4:
                st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def restore_scheduler(ckpt: Checkpoint, scheduler: Any) -> None:
    if scheduler is None or ckpt.state.get("scheduler") is None:
        return
    live = scheduler.state_dict()
    scheduler.load_state_dict(_tuples(ckpt.state["scheduler"], live))


def restore_rng(ckpt: Checkpoint, aug_gen: torch.Generator) -> None:
    """Every random generator back where it stood at the end of the checkpoint's epoch."""
    torch.set_rng_state(ckpt.tensors["rng.torch"])
    aug_gen.set_state(ckpt.tensors["rng.augment"])
    cuda = [ckpt.tensors[k] for k in sorted(ckpt.tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, pos, has_gauss, cached = ckpt.state["rng"]["numpy"]
    np.random.set_state((name, ckpt.tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    v, internal, gauss = ckpt.state["rng"]["python"]
    random.setstate((v, tuple(internal), gauss))


def _named(state: dict[str, Any], key: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    """A file name that ``state.json`` gives under ``key``: one of ``allowed`` (never a path)."""
    name = state.get(key, default)
    if name is not None and name not in allowed:
        raise RunError(f"checkpoint: state.json names {str(name)[:80]!r} as its {key}; want one of "
                       f"{', '.join(a for a in allowed if a != TENSORS_FILE)}", param="resume")
    return name


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  #: element size -> an integer type


def _same(a: torch.Tensor | None, b: torch.Tensor) -> bool:
    """Bit for bit (``torch.equal`` of floats would take -0.0 for 0.0), compared as integers of the same size."""
    if a is None or a.dtype != b.dtype or a.shape != b.shape:
        return False
    bits = _BITS.get(a.element_size())
    if bits is None:
        return False
    return torch.equal(a.view(bits), b.view(bits))


def _token(file: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt") as f:
            return (f.metadata() or {}).get("token")
    except Exception:  # missing or unreadable: not the base this writer wrote
        return None


class Writer:
    """Writes the checkpoints of one run into its folder (see the module docstring), each epoch's
    tensors split in two: those unchanged since this writer's first write (a frozen backbone, its
    copy among the best epoch's weights) stay in the base file written then, the others go to the slot."""

    def __init__(self) -> None:
        self.base: dict[str, torch.Tensor] | None = None
        self.base_name = ""
        self.token = ""

    def write(self, run_dir: str | os.PathLike, ckpt: Checkpoint) -> Path:
        """Write ``ckpt`` into ``run_dir/checkpoint``: the base when this folder lacks this writer's,
        the changed tensors to the free slot, then ``state.json`` renamed over the old one (the
        commit); what the older state used is removed after."""
        from safetensors.torch import save

        folder = Path(run_dir) / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        try:
            current = json.loads((folder / STATE_FILE).read_text())
            slot_now = _named(current, "tensors", SLOTS, None)
            base_now = _named(current, "base", BASES, None)
        except (OSError, ValueError, AttributeError, RunError):
            slot_now = base_now = None
        if self.base is None or _token(folder / self.base_name) != self.token:
            self.base_name = BASES[1] if base_now == BASES[0] else BASES[0]
            self.token = secrets.token_hex(8)
            self.base = dict(ckpt.tensors)  # copies already: the fit loop never changes them
            atomic_write_bytes(folder / self.base_name, save({k: v.contiguous() for k, v in self.base.items()},
                                                             metadata={"format": FORMAT, "token": self.token}))
        own = {k: v.contiguous() for k, v in ckpt.tensors.items() if not _same(self.base.get(k), v)}
        slot = SLOTS[1] if slot_now == SLOTS[0] else SLOTS[0]
        atomic_write_bytes(folder / slot, save(own, metadata={"format": FORMAT}))
        pause_point("checkpoint-staged")  # (a test hook: killed here, the epoch before stays the checkpoint)
        state = {**ckpt.state, "tensors": slot, "base": self.base_name, "base_token": self.token,
                 "from_base": sorted(k for k in ckpt.tensors if k not in own)}
        atomic_write_bytes(folder / STATE_FILE, json.dumps(state, indent=1).encode())
        for p in folder.iterdir():  # the older slot and base, and what a killed write left (temporary names)
            if p.name not in (STATE_FILE, slot, self.base_name) and not p.is_dir():
                p.unlink(missing_ok=True)
        return folder


def write(run_dir: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write one checkpoint into ``run_dir/checkpoint`` (:meth:`Writer.write`, a new writer)."""
    return Writer().write(run_dir, ckpt)


def read(run_dir: str | os.PathLike) -> Checkpoint:
    """The checkpoint of a run directory; RunError (one line) when it has none or it is unreadable."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(run_dir) / CHECKPOINT_DIR
    if not (folder / STATE_FILE).is_file():
        raise RunError(f"{run_dir}: holds no checkpoint, so there is nothing to continue (a run keeps one only "
                       "when it stopped before its last epoch: interrupted, killed, early stopping or a goal)",
                       param="resume")
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{folder / STATE_FILE}: not readable JSON ({exc})", param="resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunError(f"{folder / STATE_FILE}: not a convlens checkpoint", param="resume")
    for key in ("phase", "epoch", "history", "optimizer", "rng", "since_best", "best"):
        if key not in state:
            raise RunError(f"{folder / STATE_FILE}: incomplete checkpoint (missing {key!r})", param="resume")
    tensors_file = folder / _named(state, "tensors", (*SLOTS, TENSORS_FILE), TENSORS_FILE)
    base = _named(state, "base", BASES, None)
    shared = state.get("from_base") or []
    try:
        tensors = load_file(str(tensors_file))
        if base is not None:
            with safe_open(str(folder / base), "pt") as f:
                if (f.metadata() or {}).get("token") != state.get("base_token"):
                    raise RunError(f"{folder / base}: not the base this checkpoint was written with", param="resume")
                tensors.update({k: f.get_tensor(str(k)) for k in shared})
    except RunError:
        raise
    except Exception as exc:  # missing, or safetensors' own error types: one line naming the folder
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(f"{folder}: cannot read the checkpoint's tensors ({why[:200]})", param="resume") from None
    if "rng.torch" not in tensors or "rng.augment" not in tensors:
        raise RunError(f"{tensors_file}: incomplete checkpoint (no random generator states)", param="resume")
    return Checkpoint(tensors, state)


# -- the folder of a run that has not ended -----------------------------------------------------------
def write_unfinished(out: str | os.PathLike, config: dict[str, Any], splits: dict[str, Any], arrays: Any,
                     ckpt: Checkpoint, writer: Writer | None = None) -> Path:
    """Create the run folder ``out`` of a run whose first epoch just ended: the marker, ``config.json``
    (``result.stopped`` is ``"unfinished"``), ``splits.json``, the in-memory data it trains on
    (``data.safetensors``, when ``arrays``, its :class:`~convlens.data.sources.ImageSet`, is given)
    and the checkpoint, written into a temporary sibling and renamed into place (an earlier folder
    there, which ``force`` allowed to replace, is moved aside first and removed after, as
    :meth:`~convlens.models.run.Run.save` does).  The caller holds the folder's write lock."""
    from safetensors.torch import save_file

    path = Path(out)
    parent = path.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
    try:
        (tmp / MARKER).write_text(json.dumps({"format": "convlens-output/1", "kind": "run"}) + "\n")
        (tmp / "config.json").write_text(json.dumps({**config, "result": {"stopped": UNFINISHED}}, indent=2))
        (tmp / "splits.json").write_text(json.dumps(splits))
        if arrays is not None:  # as Run.save keeps them
            t = {"images": arrays.images.contiguous(), "labels": arrays.labels.contiguous()}
            if arrays.given_split is not None:
                t["given_test"] = torch.tensor([g == "test" for g in arrays.given_split], dtype=torch.uint8)
            save_file(t, str(tmp / ARRAYS_FILE), metadata={"format": "convlens-run-arrays"})
        (writer or Writer()).write(tmp, ckpt)
        swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def unfinished(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint's ``state.json`` when ``path`` is the folder of a run that has not ended (no
    weights, a config that says ``unfinished``, a checkpoint), else None."""
    path = Path(path)
    try:
        if (path / "weights.safetensors").exists() or not (path / CHECKPOINT_DIR / STATE_FILE).is_file():
            return None
        config = json.loads((path / "config.json").read_text())
        state = json.loads((path / CHECKPOINT_DIR / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not isinstance(config.get("result"), dict) or not isinstance(state, dict):
        return None
    if config["result"].get("stopped") != UNFINISHED or state.get("format") != FORMAT:
        return None
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    return {**state, "planned": train.get("finetune_epochs" if state.get("phase") == "finetune" else "epochs")}


def describe_unfinished(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """What an unfinished run folder is (``state``: :func:`unfinished`'s), for one line; said once
    no process trains there (its write lock is free), so the one that did was killed."""
    planned = state.get("planned")
    of = f" of {planned}" if isinstance(planned, int) else ""
    done = f"{state.get('phase')} epoch {state.get('epoch')}{of}"
    return f"{path}: an unfinished run (killed after {done}; no weights yet)"


def load_unfinished(path: str | os.PathLike):
    """The :class:`~convlens.models.run.Run` of an unfinished run folder (its config and splits, checked;
    no weights, history or metrics), for :func:`~convlens.train.train` to continue."""
    path = Path(path)
    config = check_schema(path / "config.json", read_json(path / "config.json"), RunConfig)
    splits = check_schema(path / "splits.json", read_json(path / "splits.json"), RunSplits) \
        if (path / "splits.json").is_file() else {}
    return Run(config, [], {}, None, splits, path)
