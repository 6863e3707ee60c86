"""Run directories: the format a training run leaves behind, as a noun (:class:`Run`).

A run directory holds ``config.json`` (everything that rebuilds the model and its
data: arch, classes, input size, source, split, seed, options, library versions),
``splits.json`` (the train/val/test item lists), ``weights.safetensors``,
``history.csv``, ``curves.png`` and ``metrics.json`` (and ``data.safetensors``, the images and
labels, when it was trained on arrays given in memory: nothing else could re-read them; no
pickle).  It is written into a
temporary sibling directory and renamed at the end, so a run is never half-written.

Every reader of run directories goes through :class:`Run` (the CLI, the web app's run
listings, reports, dataset examples, evaluation):

>>> run = Run.load("runs/faces")               # doctest: +SKIP
>>> run.summary()["accuracy"], run.model().predict("face.pgm")   # doctest: +SKIP
>>> ds, split = run.dataset()                  # the run's own data and split   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import importlib.metadata as md
import io
import json
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel
from torch import nn

from ..data.sources import ImageSet, load_source, resize_set
from ..data.splits import Split
from ..errors import RunError, SpecError
from ..options import ArchConfig, HistoryRow, Normalization, RunConfig, RunMetrics, RunSplits, check_file  # noqa: F401
from ..options import read_json as read_checked_json
from ..render.curves import curves_image
from ..render.files import (
    MARKER,
    Saved,
    check_not_precious,
    check_replaceable,
    clean_leftovers,
    lock_output,
    no_space,
    pause_point,
    swap_into_place,
    unlock_output,
)
from ..view import View
from .arch import build_arch, check_finite, check_spec, freeze_until, parse_arch
from .lensmodel import LensModel
from .preprocess import Preprocess

FILES = ("config.json", "splits.json", "weights.safetensors", "history.csv", "curves.png", "metrics.json")
HISTORY_FIELDS = ("phase", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "best")
#: file role (in :meth:`Run.save`'s :class:`Saved`) -> file name in the run directory
ROLES = {"config": "config.json", "splits": "splits.json", "weights": "weights.safetensors",
         "history": "history.csv", "curves": "curves.png", "metrics": "metrics.json"}
#: data sources that a run can re-read by their recorded kind and path
REREADABLE = ("digits", "folder", "cmu-faces", "mnist", "fashion-mnist")
#: where a run trained on in-memory arrays keeps them (uint8 images, labels, the given split)
ARRAYS_FILE = "data.safetensors"


# -- the schema of a run directory's files: declared in convlens.options (checked when read: one line
# naming the file and the field); kept importable from here by their old names
def check_schema(where: Path | str, obj: Any, model: type[BaseModel]) -> Any:
    """``obj`` checked against ``model``; RunError naming ``where`` and the field when it does not fit."""
    check_file(where, obj, model, RunError)
    return obj


def library_versions() -> dict[str, str]:
    """Python and the versions of the libraries that shape a run (saved in its config)."""
    out = {"python": platform.python_version()}
    for pkg in ("convlens", "torch", "torchvision", "timm", "lightning-fabric", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (a run's ``created``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_out(out: str | os.PathLike, force: bool) -> Path:
    """Refuse an existing run directory unless ``force``, and with ``force`` one that is not
    convlens' output (see :func:`~convlens.render.files.is_convlens_output`), as well as ``.``, ``~``
    and ``/``; then take the folder's write lock (a second writer is refused, naming this process)
    and remove what a killed earlier save left beside it."""
    path = Path(out)
    check_not_precious(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"out {path}: exists and is not a directory", param="out")
    if path.exists() and not force:
        raise RunError(f"{path}: already exists; choose another out directory or pass force to replace it",
                       param="force")
    if force:
        check_replaceable(path)
    lock_output(path)
    clean_leftovers(path)
    return path


class Run(View):
    """A trained model with its config, history, test metrics and splits.

    ``run.model()`` is a :class:`~convlens.models.LensModel` taking raw pixels;
    ``run.dataset()`` re-reads the run's own data and split; ``run.summary()`` is the row a
    listing shows; ``run.figure()`` the training curves; ``run.save(dir)`` writes the run
    directory atomically and returns the :class:`~convlens.render.files.Saved` files;
    ``Run.load(dir)`` reads one back.
    """

    def __init__(self, config: dict[str, Any], history: list[dict[str, Any]], metrics: dict[str, Any],
                 module: nn.Module | None, splits: dict[str, Any], path: Path | None = None,
                 device: str = "cpu", arrays: ImageSet | None = None):
        self.config = config
        #: the data of a run trained on in-memory arrays (written as data.safetensors; read lazily)
        self.arrays = arrays
        self.history = history
        self.metrics = metrics
        self.splits = splits
        self.path = path
        self.device = device
        self._module = module
        self._model: LensModel | None = None
        #: an optional picture of the training augmentation, written as ``augment_preview.png``
        self.preview: Image.Image | None = None

    def __repr__(self) -> str:
        acc = self.metrics.get("accuracy")
        return (f"Run({self.config['arch']['spec']!r}, classes={len(self.class_names)}, "
                f"test_accuracy={acc if acc is None else round(acc, 4)}, path={str(self.path) if self.path else None})")

    # -- what it holds ---------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def module(self) -> nn.Module:
        """The trained ``nn.Module`` (read from ``weights.safetensors`` on first use)."""
        if self._module is None:
            if self.path is None:
                raise RunError("this run has no module and no directory to read it from")
            self._module = build_module(self.path, self.config).to(self.device)
        return self._module

    def model(self) -> LensModel:
        """The trained model as a LensModel (raw-pixel preprocessing, the run's classes)."""
        if self._model is None:
            self._model = lens_model(self.module, self.config, self.path, self.device)
        return self._model

    def dataset(self, data: "str | ImageSet | None" = None) -> tuple[ImageSet, Split]:
        """The run's data source re-read (or ``data`` given instead), and its :class:`Split`
        from ``splits.json``; RunError when the items changed since training."""
        where = f"{self.path}/splits.json" if self.path else "the run's splits"
        d = self.config.get("data") or {}
        if data is None:
            kind = d.get("kind")
            if kind == "arrays":
                ds = self.read_arrays()
            elif kind not in REREADABLE:
                raise RunError(f"{self.path}: its data source {kind!r} cannot be re-read; pass data", param="data")
            else:
                spec = "digits" if kind == "digits" else f"{kind}:{d['path']}"
                ds = load_source(spec, label=d.get("label"), scale=d.get("scale"))
        else:
            ds = load_source(data)
        if d.get("size"):  # trained on resized copies: the same size again
            ds = resize_set(ds, tuple(d["size"]))
        if not self.splits:
            raise RunError(f"{self.path}: no splits.json, so the test split is unknown")
        return ds, Split.from_ids(self.splits, ds, what=where)

    def read_arrays(self) -> ImageSet:
        """The in-memory arrays a run was trained on (from ``data.safetensors`` once saved)."""
        if self.arrays is not None:
            return self.arrays
        file = self.path / ARRAYS_FILE if self.path is not None else None
        if file is None or not file.is_file():
            raise RunError(f"{self.path}: trained on arrays but holds no {ARRAYS_FILE}; pass data=(X, y)",
                           param="data")
        from safetensors.torch import load_file

        try:
            t = load_file(str(file))
            images, labels = t["images"], t["labels"]
        except Exception as exc:  # safetensors' own error types: one line naming the file
            raise RunError(f"{file}: cannot read the run's arrays ({str(exc).splitlines()[0] if str(exc) else exc})") \
                from None
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.ndim != 1 or len(labels) != len(images):
            raise RunError(f"{file}: want uint8 images (N, C, H, W) and N labels (got {tuple(images.shape)} "
                           f"{images.dtype} and {tuple(labels.shape)})")
        d = self.config.get("data") or {}
        split = t.get("given_test")
        n = len(labels)
        if split is not None:
            flags = split.bool().tolist()
            train_n = flags.count(False)
            ids = [f"train#{i}" for i in range(train_n)] + [f"test#{i}" for i in range(n - train_n)]
            given = ["test" if f else "train" for f in flags]
        else:
            ids, given = [f"#{i}" for i in range(n)], None
        source = {k: v for k, v in d.items() if k not in ("n", "skipped")}
        self.arrays = ImageSet(images.contiguous(), labels.long(), self.class_names, ids, source, given_split=given)
        return self.arrays

    def summary(self) -> dict[str, Any]:
        """One JSON-ready row for listings: id, arch, data, classes, headline metrics, epochs, created."""
        m, cfg = self.metrics, self.config
        data = cfg.get("data") or {}
        result = cfg.get("result") or {}
        created = cfg.get("created")
        if created is None and self.path is not None and (self.path / "config.json").is_file():
            mtime = (self.path / "config.json").stat().st_mtime
            created = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
        return {
            "id": self.path.name if self.path is not None else None,
            "path": str(self.path) if self.path is not None else None,
            "arch": cfg["arch"].get("spec"),
            "arch_kind": cfg["arch"].get("kind"),
            "data": data.get("spec") or data.get("kind"),
            "classes": len(self.class_names),
            "class_names": self.class_names,
            "input_size": list(cfg["input_size"]),
            "accuracy": m.get("accuracy"),
            "balanced_accuracy": m.get("balanced_accuracy"),
            "macro_f1": m.get("macro_f1"),
            "n_test": m.get("n_test"),
            "epochs": result.get("epochs_run", m.get("epochs_run", len(self.history))),
            "best_epoch": result.get("best_epoch", m.get("best_epoch")),
            "stopped": result.get("stopped", m.get("stopped")),
            "seconds": result.get("seconds", m.get("seconds")),
            "created": created,
        }

    def history_columns(self) -> dict[str, list[Any]]:
        """The history as columns (``{"epoch": [...], "val_loss": [...]}``), for plotting clients."""
        cols: dict[str, list[Any]] = {k: [] for k in HISTORY_FIELDS}
        for row in self.history:
            for k in HISTORY_FIELDS:
                cols[k].append(row.get(k))
        return cols if self.history else {}

    # -- the View contract -----------------------------------------------------------------
    def figure(self, title: str | None = None, **_opts: Any) -> Image.Image:
        """The training curves (loss and accuracy per epoch, training vs validation)."""
        return curves_image(self.history, title=self.title() if title is None else title)

    def title(self) -> str:
        return f"{self.config['arch']['spec']} on {(self.config.get('data') or {}).get('spec', '')}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "summary": self.summary(),
                "metrics": self.metrics, "config": self.config, "history": self.history}

    def save(self, out_dir: str | os.PathLike, force: bool = False, **_opts: Any) -> Saved:
        """Write the run directory atomically (a temporary sibling, then one rename).

        Refuses an existing directory unless ``force``; returns the files by role
        (``config``, ``splits``, ``weights``, ``history``, ``curves``, ``metrics``).
        """
        from safetensors.torch import save_file

        path = check_out(out_dir, force)
        if self.arrays is None and (self.config.get("data") or {}).get("kind") == "arrays" and self.path is not None:
            self.read_arrays()  # a loaded run saved elsewhere keeps its arrays
        parent = path.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
        except OSError as exc:
            raise RunError(f"out {path}: cannot create it ({exc.strerror or exc})", param="out") from None
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
            save_file(state, str(tmp / "weights.safetensors"), metadata={"format": "convlens-run"})
            (tmp / MARKER).write_text(json.dumps({"format": "convlens-output/1", "kind": "run"}) + "\n")
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2))
            (tmp / "splits.json").write_text(json.dumps(self.splits))
            (tmp / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
            buf = io.StringIO(newline="")
            w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\r\n")
            w.writeheader()
            for row in self.history:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
            (tmp / "history.csv").write_bytes(buf.getvalue().encode("utf-8"))
            self.figure().save(tmp / "curves.png", format="PNG")
            if self.arrays is not None:
                arrays = {"images": self.arrays.images.contiguous(), "labels": self.arrays.labels.contiguous()}
                if self.arrays.given_split is not None:
                    arrays["given_test"] = torch.tensor([s == "test" for s in self.arrays.given_split],
                                                        dtype=torch.uint8)
                save_file(arrays, str(tmp / ARRAYS_FILE), metadata={"format": "convlens-run-arrays"})
            if self.preview is not None:
                self.preview.save(tmp / "augment_preview.png", format="PNG")
            pause_point("run-staged")  # (a test hook: a kill here leaves only the temporary folder)
            swap_into_place(tmp, path)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            err = no_space(exc, path)
            if err is exc:
                raise
            raise err from None
        finally:
            unlock_output(path)
        self.path = path
        self._model = None
        files = {role: [path / name] for role, name in ROLES.items()}
        files["marker"] = [path / MARKER]  # says the folder is convlens output (--force may replace it)
        if self.preview is not None:
            files["augment_preview"] = [path / "augment_preview.png"]
        if self.arrays is not None:
            files["data"] = [path / ARRAYS_FILE]
        return Saved(path, files)

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", *, weights: bool = True) -> "Run":
        """Read a run directory; ``weights=False`` leaves the weights on disk until
        :attr:`module` or :meth:`model` is first used (for listings)."""
        path = Path(path)
        config = read_config(path)
        module = build_module(path, config).to(device) if weights else None
        history = read_history(path / "history.csv") if (path / "history.csv").is_file() else []
        metrics = (check_schema(path / "metrics.json", read_json(path / "metrics.json"), RunMetrics)
                   if (path / "metrics.json").is_file() else {})
        splits = (check_schema(path / "splits.json", read_json(path / "splits.json"), RunSplits)
                  if (path / "splits.json").is_file() else {})
        return cls(config, history, metrics, module, splits, path, device=device)


def parse_cell(v: str) -> Any:
    """A history.csv cell back to None, a bool, an int or a float."""
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v) if v.lstrip("-").isdigit() else float(v)
    except ValueError:
        return v


def read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv, one dict per epoch, each row checked (RunError naming the line and the field)."""
    history: list[dict[str, Any]] = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for line, row in enumerate(reader, start=2):
                cells = {k: parse_cell(v) for k, v in row.items() if k is not None and v is not None}
                check_schema(f"{path} line {line}", cells, HistoryRow)
                history.append(cells)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: not a readable CSV ({exc})") from None
    return history


def read_json(path: Path) -> Any:
    """A JSON file of a run; RunError (one line) when it cannot be read, nests too deeply or holds a
    number that is not finite in float32 (:func:`convlens.options.read_json`)."""
    return read_checked_json(path, RunError)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config.json of a run directory, checked; RunError when it is not a run."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such run directory")
    if not path.is_dir():
        raise RunError(f"{path}: not a run directory (a file)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RunError(f"{path}: not a convlens run (no config.json; train one with `convlens train --out`)")
    config = read_json(cfg_path)
    if not isinstance(config, dict) or config.get("format") != "convlens-run":
        raise RunError(f"{cfg_path}: not a convlens run config (no \"format\": \"convlens-run\")")
    for key in ("arch", "class_names", "input_size"):
        if key not in config:
            raise RunError(f"{cfg_path}: incomplete run config (missing {key!r})")
    if not (path / "weights.safetensors").is_file():
        result = config.get("result")
        if isinstance(result, dict) and result.get("stopped") == "unfinished":
            raise RunError(f"{path}: an unfinished run (killed, or still training; no weights yet); continue it "
                           f"with `convlens train --resume {path}`")
        raise RunError(f"{path}: incomplete run (no weights.safetensors)")
    check_schema(cfg_path, config, RunConfig)
    if config["arch"].get("kind") == "spec":  # the network it describes fits the bounds, before any allocation
        try:
            check_spec(parse_arch(config["arch"]["spec"]).spec, config["input_size"], len(config["class_names"]))
        except SpecError as exc:
            raise RunError(f"{cfg_path}: field 'arch.spec': {exc}") from None
    return config


def build_module(path: Path, config: dict[str, Any]) -> nn.Module:
    """The run's architecture rebuilt from its config, with its weights, in eval mode."""
    from safetensors.torch import load_file

    c = int(config["input_size"][0])
    norm = config.get("normalization") or {}
    module = build_arch(config["arch"]["spec"], config["input_size"], len(config["class_names"]),
                        mean=norm.get("mean") or (0.5,) * c, std=norm.get("std") or (0.25,) * c,
                        pretrained=False)
    try:
        state = load_file(str(path / "weights.safetensors"))
    except Exception as exc:  # safetensors raises its own error types for bad files: one line naming it
        raise RunError(f"{path / 'weights.safetensors'}: cannot read weights ({exc})") from None
    check_finite(state, str(path / "weights.safetensors"), RunError)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RunError(f"{path / 'weights.safetensors'}: weights do not fit the run's arch ({first})") from None
    if config["arch"].get("kind") == "spec":
        module = module.to(memory_format=torch.channels_last)
    layer = (config.get("train") or {}).get("freeze_until")
    if layer:  # trained with its first layers frozen: they stay so (the layer table counts them)
        try:
            freeze_until(module, layer)
        except SpecError as exc:
            raise RunError(f"{path / 'config.json'}: train.freeze_until: {exc}") from None
    return module.eval()


def lens_model(module: nn.Module, config: dict[str, Any], path: Path | None, device: str = "cpu") -> LensModel:
    """A run's module as a LensModel: ``Preprocess(input_size, mean=0, std=1/255, crop_pct=1.0)``,
    so that the usual transform (resize, to-tensor in [0, 1], normalise) yields 0..255 pixels."""
    c = int(config["input_size"][0])
    pre = Preprocess(input_size=tuple(config["input_size"]), mean=(0.0,) * c, std=(1 / 255,) * c,
                     interpolation="bilinear", crop_pct=1.0)
    name = path.name if path is not None else f"run:{config['arch']['spec']}"
    source = {"kind": "run", "path": str(path.resolve()) if path is not None else None}
    return LensModel(module, pre, config["class_names"], name=name, source=source, device=device).to(device)


def load_run_model(path: str | os.PathLike, device: str = "cpu") -> LensModel:
    """A run directory as a :class:`~convlens.models.LensModel` taking raw pixels (``Run.load(path).model()``)."""
    return Run.load(path, device=device).model()
