"""The one validation layer: every option set and every file convlens reads back, declared once.

Each set of options a verb takes (:class:`KernelOptions`, :class:`ScoreOptions`,
:class:`ExplainOptions`, :class:`VisualizeOptions`, :class:`AuditOptions`, :class:`TrainOptions`)
and each file convlens reads back (a run's ``config.json`` :class:`RunConfig`, ``metrics.json``
:class:`RunMetrics`, ``splits.json`` :class:`RunSplits`, ``history.csv`` rows :class:`HistoryRow`, a
checkpoint's JSON :class:`CheckpointMeta` with its :class:`PreprocessConfig`, an audit's state
:class:`AuditState`) is a pydantic model with **bounds**. The library, the CLI and the web check
through the same models, with :func:`check_options` (a bad option: one :class:`SpecError` naming
the parameter) or :func:`check_file` (a bad file: one line naming the file and the field, in the
error class the caller gives). pydantic's ``ValidationError`` never leaves this module.

Non-finite numbers and numbers beyond float32's range (``|x| > 3.4e38``) are errors wherever a
number is read: :data:`Finite` in the models, and :func:`read_json` for every JSON file.

The bounds, and the worst case each one allows (so that the worst allowed request costs a bounded
time and memory; all of it is checked before anything is allocated):

* :data:`MAX_IMAGE_SIDE` 4096 px: the longest side of an image the kernels lab convolves, of a
  model's input (``input_size``) and of a resize; one RGB float32 image of it is 192 MiB.
* :data:`MAX_KERNEL_SIDE` 64: a kernels-lab matrix is at most 64x64.
* :data:`MAX_PADDING` 1024 zero pixels on each side in the kernels lab.
* :data:`MAX_REPEAT` 16 convolutions in a row in the kernels lab (each one a stage and a panel of
  its figure: 16 panels draw in about a second).
* :data:`MAX_LAB_VALUES` 2**25 float32 values held by all the lab's stages together (128 MiB),
  and :data:`MAX_LAB_MACS` 2**31 multiply-adds for all its convolutions (a few seconds of CPU):
  :func:`convlens.lens.kernels.plan_stages` adds them up from the shapes before computing.
* :data:`MAX_STEPS` 1000: deletion/insertion intervals of ``score`` (one forward per step, map and
  curve) and optimisation steps of ``visualize``.
* :data:`MAX_BATCH` 4096 inputs per forward.
* :data:`MAX_CHANNELS` 4096: channels of an input, filters of a conv, units of an fc layer.
* :data:`MAX_CLASSES` 100000 classes (ImageNet-21k has 21843).
* :data:`MAX_LAYERS` 256 tokens in an architecture spec.
* :data:`MAX_SPEC_PARAMETERS` 2**26 parameters (256 MiB of float32) and
  :data:`MAX_SPEC_ACTIVATIONS` 2**26 values in one layer's output for one image (256 MiB) for a
  network built from a spec: :func:`convlens.models.arch.check_spec` works both out from the
  tokens and the input size before a module exists.
* :data:`MAX_NESTING` 64 levels of lists and objects in a JSON file, :data:`MAX_JSON_BYTES`
  64 MiB for the file itself.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConvlensError, SpecError

# -- bounds ------------------------------------------------------------------------------------------
MAX_IMAGE_SIDE = 4096
MAX_KERNEL_SIDE = 64
MAX_PADDING = 1024
MAX_REPEAT = 16
MAX_LAB_VALUES = 1 << 25
MAX_LAB_MACS = 1 << 31
MAX_STEPS = 1000
MAX_BATCH = 4096
MAX_CHANNELS = 4096
MAX_CLASSES = 100_000
MAX_LAYERS = 256
MAX_SPEC_PARAMETERS = 1 << 26
MAX_SPEC_ACTIVATIONS = 1 << 26
MAX_NESTING = 64
MAX_JSON_BYTES = 64 << 20
MAX_SEED = 2**63 - 1
#: the largest finite float32; a larger number would become ``inf`` in a float32 tensor
FLOAT32_MAX = 3.4028234663852886e38


# -- value types ---------------------------------------------------------------------------------------
def finite32(v: Any) -> float:
    """``v`` as a float when it is a finite number within float32's range; ValueError otherwise."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError("must be a number")
    try:
        f = float(v)
    except OverflowError:  # an int of 400 digits
        raise ValueError("must lie within float32's range (|x| <= 3.4e38)") from None
    if not math.isfinite(f):
        raise ValueError("must be a finite number (not NaN or infinite)")
    if abs(f) > FLOAT32_MAX:
        raise ValueError("must lie within float32's range (|x| <= 3.4e38)")
    return f


def whole(lo: int, hi: int, what: str = "") -> Any:
    """An int type accepting Python and NumPy integers (never a bool, a float or a string) in
    ``[lo, hi]``; the message says the range."""
    kind = what or ("a positive integer" if lo == 1 else "a non-negative integer" if lo == 0 else "an integer")

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= v <= hi:
            raise ValueError(f"must be {kind} up to {hi}" if lo in (0, 1) else f"must be {kind} from {lo} to {hi}")
        return int(v)
    return Annotated[int, BeforeValidator(check)]


def _nonneg(v: float) -> float:
    if v < 0:
        raise ValueError("must be >= 0")
    return v


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be > 0")
    return v


#: a finite float within float32's range (NaN, inf, 1e39 are errors)
Finite = Annotated[float, BeforeValidator(finite32)]
NonNegative = Annotated[float, BeforeValidator(finite32), AfterValidator(_nonneg)]
Positive = Annotated[float, BeforeValidator(finite32), AfterValidator(_positive)]
Side = whole(1, MAX_IMAGE_SIDE)
Channels = whole(1, MAX_CHANNELS)
Steps = whole(1, MAX_STEPS)
Batch = whole(1, MAX_BATCH)
Seed = whole(0, MAX_SEED)


# -- turning a ValidationError into one line -------------------------------------------------------------
def _shown(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(exc: ValidationError, where: str | None) -> tuple[str, str | None]:
    """(one line, the parameter at fault) for the first problem of ``exc``."""
    err = exc.errors(include_url=False)[0]
    loc = [str(x) for x in err.get("loc", ())]
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    got = "" if err.get("type") == "missing" or not loc else f" (got {_shown(err.get('input'))})"
    if where is not None:
        field = f"field {'.'.join(loc)!r}: " if loc else ""
        return " ".join(f"{where}: {field}{msg}{got}{more}".split()), None
    param = loc[0] if loc else None
    name = ".".join(loc) if loc else "options"
    text = msg if msg.startswith(name + " ") else f"{name} {msg}"
    return " ".join(f"{text}{got}{more}".split()), param


def check_options(model: type[BaseModel], **values: Any) -> Any:
    """``values`` checked against the option set ``model`` (its instance, normalised), or a
    :class:`SpecError` naming the first bad parameter as the library spells it (``param=``), which
    the CLI renames to its flag and the web answers with 4xx."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        msg, param = _message(exc, None)
        raise SpecError(msg, param=param) from None


def check_file(where: "str | os.PathLike", obj: Any, model: type[BaseModel],
               error: type[ConvlensError] = ConvlensError) -> Any:
    """``obj`` (read from the file ``where``) checked against ``model`` (its instance), or ``error``
    with one line naming the file and the field."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise error(_message(exc, str(where))[0]) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _float32(text: str) -> float:
    f = float(text)
    if not math.isfinite(f) or abs(f) > FLOAT32_MAX:
        raise ValueError(f"{text[:30]} overflows float32 (|x| <= 3.4e38)")
    return f


def _depth(obj: Any, limit: int) -> int:
    """How deeply lists and dicts nest in ``obj`` (stops counting past ``limit``), iteratively."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(text: str, where: str, error: type[ConvlensError] = ConvlensError) -> Any:
    """JSON text checked on the way in: no NaN/Infinity, no number beyond float32, at most
    :data:`MAX_NESTING` levels; ``error`` naming ``where`` otherwise."""
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_float32)
    except RecursionError:
        raise error(f"{where}: nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # bad JSON, NaN, an overflowing number, an int of over 4300 digits
        raise error(f"{where}: not readable JSON ({' '.join(str(exc).split())[:160]})") from None
    if _depth(obj, MAX_NESTING) > MAX_NESTING:
        raise error(f"{where}: nested deeper than {MAX_NESTING} levels")
    return obj


def read_json(path: "str | os.PathLike", error: type[ConvlensError] = ConvlensError) -> Any:
    """A JSON file convlens reads back, with :func:`parse_json`'s checks and at most
    :data:`MAX_JSON_BYTES`; ``error`` (one line naming the file) when it cannot be read."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(f"{p}: {size} bytes is too large for a JSON file convlens reads "
                        f"(at most {MAX_JSON_BYTES >> 20} MiB)")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{p}: not readable JSON ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_json(text, str(p), error)


# -- option sets -------------------------------------------------------------------------------------------
class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _padding(v: Any) -> Any:
    if isinstance(v, str):
        p = v.strip().lower()
        if p in ("valid", "same"):
            return p
        if p.isdigit() and len(p) <= 10:
            v = int(p)
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= MAX_PADDING:
        return int(v)
    raise ValueError(f"padding must be valid, same or a non-negative integer up to {MAX_PADDING}")


def _color(v: Any) -> str:
    c = str(v).strip().lower()
    c = {"grey": "gray", "l": "gray", "grayscale": "gray", "greyscale": "gray",
         "color": "rgb", "colour": "rgb", "per-channel": "rgb"}.get(c, c)
    if c not in ("gray", "rgb"):
        raise ValueError("color must be gray or rgb")
    return c


def _pool(v: Any) -> Optional[str]:
    if v is None:
        return None
    p = str(v).strip().lower()
    if p in ("", "none", "no"):
        return None
    p = {"average": "avg", "mean": "avg", "maximum": "max"}.get(p, p)
    if p not in ("max", "avg"):
        raise ValueError("pool must be max or avg")
    return p


class KernelOptions(_Options):
    """The kernels lab's settings (:func:`convlens.lens.kernels.apply_kernel`), normalised:
    ``padding`` ``"valid"``/``"same"``/an int, ``pool`` ``None``/``"max"``/``"avg"``."""

    color: Annotated[str, BeforeValidator(_color)] = "gray"
    stride: whole(1, MAX_IMAGE_SIDE) = 1  # type: ignore[valid-type]
    padding: Annotated[Any, BeforeValidator(_padding)] = "valid"
    repeat: whole(1, MAX_REPEAT) = 1  # type: ignore[valid-type]
    pool: Annotated[Optional[str], BeforeValidator(_pool)] = None
    pool_size: whole(1, MAX_IMAGE_SIDE) = 2  # type: ignore[valid-type]
    pool_stride: Optional[whole(1, MAX_IMAGE_SIDE)] = None  # type: ignore[valid-type]


class ScoreOptions(_Options):
    """``score``'s numbers: deletion/insertion ``steps``, the pointing game's ``tolerance`` (pixels),
    the forward ``batch_size`` and the ``seed``."""

    steps: Steps = 20  # type: ignore[valid-type]
    tolerance: Annotated[float, BeforeValidator(finite32), AfterValidator(_nonneg)] = 0.0
    batch_size: Optional[Batch] = None  # type: ignore[valid-type]
    seed: Seed = 0  # type: ignore[valid-type]

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, v: float) -> float:
        if v > MAX_IMAGE_SIDE:
            raise ValueError(f"must be at most {MAX_IMAGE_SIDE} pixels")
        return v


def _unit(v: float) -> float:
    if not 0.0 <= v <= 1.0:
        raise ValueError("must be between 0 and 1")
    return v


class ExplainOptions(_Options):
    """``explain``'s numbers: the overlay's ``alpha`` in [0, 1] and the ``batch_size``."""

    alpha: Annotated[float, BeforeValidator(finite32), AfterValidator(_unit)] = 0.5
    batch_size: Batch = 16  # type: ignore[valid-type]


class VisualizeOptions(_Options):
    """``visualize``'s numbers: optimisation ``steps``, ``lr``, the ``tv``/``l2`` penalties, the
    ``batch_size``, the ``seed`` and how many real examples (``top``)."""

    steps: Steps = 256  # type: ignore[valid-type]
    lr: Positive = 0.05  # type: ignore[valid-type]
    tv: NonNegative = 0.0  # type: ignore[valid-type]
    l2: NonNegative = 0.0  # type: ignore[valid-type]
    batch_size: Batch = 16  # type: ignore[valid-type]
    seed: Seed = 0  # type: ignore[valid-type]
    top: whole(1, 1000) = 6  # type: ignore[valid-type]


#: how the audit's interventions replace a region: the data's mean colour, a strong Gaussian blur, or
#: ROAD's noisy linear inpainting (:mod:`convlens.audit.interventions.masking`)
REPLACEMENTS = ("mean", "blur", "inpaint")


def _replacement(v: Any) -> str:
    r = v.strip().lower() if isinstance(v, str) else v
    if r not in REPLACEMENTS:
        raise ValueError(f"must be {', '.join(REPLACEMENTS[:-1])} or {REPLACEMENTS[-1]}")
    return r


class AuditOptions(_Options):
    """``audit``'s options: ``top_k`` regions, ``batch_size``, ``shard_size``, ``workers`` and how the
    interventions ``replace`` a region (one of :data:`REPLACEMENTS`)."""

    top_k: whole(1, 1000) = 5  # type: ignore[valid-type]
    batch_size: Optional[Batch] = None  # type: ignore[valid-type]
    shard_size: whole(1, 1 << 20) = 512  # type: ignore[valid-type]
    workers: Optional[whole(1, 1024)] = None  # type: ignore[valid-type]
    replace: Annotated[str, BeforeValidator(_replacement)] = "mean"


def _fraction(v: float) -> float:
    if not 0.0 <= v < 1.0:
        raise ValueError("must be at least 0 and below 1")
    return v


class TrainOptions(_Options):
    """``train``'s numbers: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, the ``val``/``test``
    fractions, ``patience``, ``finetune_epochs``, ``seed`` and the ``scale`` of a folder's images."""

    epochs: whole(1, 100_000) = 40  # type: ignore[valid-type]
    batch_size: Batch = 32  # type: ignore[valid-type]
    lr: Optional[NonNegative] = None  # type: ignore[valid-type]  (0: a frozen baseline)
    weight_decay: NonNegative = 1e-4  # type: ignore[valid-type]
    val: Annotated[float, BeforeValidator(finite32), AfterValidator(_fraction)] = 0.1
    test: Annotated[float, BeforeValidator(finite32), AfterValidator(_fraction)] = 0.2
    patience: whole(0, 100_000) = 15  # type: ignore[valid-type]
    finetune_epochs: whole(0, 100_000) = 0  # type: ignore[valid-type]
    seed: Seed = 0  # type: ignore[valid-type]
    scale: whole(1, 64) = 2  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _parts(self) -> "TrainOptions":
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test must leave some data to train on (got {self.val} + {self.test})")
        return self


# -- files convlens reads back ----------------------------------------------------------------------------
class _File(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


def _input_size(v: list[int]) -> list[int]:
    c, h, w = v
    if not 1 <= c <= MAX_CHANNELS:
        raise ValueError(f"channels must be from 1 to {MAX_CHANNELS}")
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise ValueError(f"height and width must be from 1 to {MAX_IMAGE_SIDE}")
    return v


InputSize = Annotated[list[int], Field(min_length=3, max_length=3), AfterValidator(_input_size)]
ClassNames = Annotated[list[str], Field(min_length=1, max_length=MAX_CLASSES)]


def _finite_list(v: list[Any]) -> list[float]:
    return [finite32(x) for x in v]


class ArchConfig(_File):
    kind: str
    spec: str = Field(min_length=1, max_length=4096)
    backbone: Optional[str] = None


class Normalization(_File):
    mean: Annotated[list[Any], Field(min_length=1, max_length=MAX_CHANNELS), AfterValidator(_finite_list)]
    std: Annotated[list[Any], Field(min_length=1, max_length=MAX_CHANNELS), AfterValidator(_finite_list)]

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError("every std must be > 0")
        return v


class DataConfig(_File):
    """config.json's ``data``: where the run's data came from; ``size`` (H, W) when resized."""

    size: Optional[Annotated[list[int], Field(min_length=2, max_length=2)]] = None
    scale: Optional[int] = Field(default=None, ge=1, le=64)

    @field_validator("size")
    @classmethod
    def _size(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and not all(1 <= x <= MAX_IMAGE_SIDE for x in v):
            raise ValueError(f"height and width must be from 1 to {MAX_IMAGE_SIDE}")
        return v


class RunConfig(_File):
    """config.json: what rebuilds the model (arch, classes, input size, normalisation) and its data."""

    format: Literal["convlens-run"]
    version: int = 1
    arch: ArchConfig
    class_names: ClassNames
    input_size: InputSize
    normalization: Optional[Normalization] = None
    data: Optional[DataConfig] = None
    split: Optional[dict[str, Any]] = None
    train: Optional[dict[str, Any]] = None
    result: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _channels_agree(self) -> "RunConfig":
        n = self.normalization
        if n is not None and not (len(n.mean) == len(n.std) == self.input_size[0]):
            raise ValueError(f"normalization: mean and std need one value per channel ({self.input_size[0]})")
        return self


OptFinite = Optional[Annotated[Any, AfterValidator(finite32)]]


class RunMetrics(_File):
    """metrics.json: the test metrics (all optional: a run without a test split has none)."""

    accuracy: OptFinite = None
    balanced_accuracy: OptFinite = None
    macro_f1: OptFinite = None
    n_test: Optional[int] = Field(default=None, ge=0)
    per_class: Optional[dict[str, dict[str, Any]]] = None
    confusion: Optional[list[list[int]]] = None
    seconds: OptFinite = None
    stopped: Optional[str] = None
    best_epoch: Optional[int] = None
    epochs_run: Optional[int] = Field(default=None, ge=0)
    hint: Optional[str] = None  # what to change when the run learned nothing (train.fit.chance_hint)


class RunSplits(_File):
    """splits.json: the item ids of each part."""

    given_test: bool = False
    train: list[str] = []
    val: list[str] = []
    test: list[str] = []


def _loss(v: Any) -> float:
    """A recorded loss: NaN or inf are facts (an epoch that diverged, written so by training), but a
    finite value beyond float32's range cannot have come from a float32 training."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError("must be a number")
    f = float(v)
    if math.isfinite(f) and abs(f) > FLOAT32_MAX:
        raise ValueError("must lie within float32's range (|x| <= 3.4e38)")
    return f


Loss = Annotated[float, BeforeValidator(_loss)]


class HistoryRow(BaseModel):
    """One row of history.csv (cells already parsed to None, bool, int or float). A loss may be NaN or
    inf (training writes a diverged epoch so; its weights are refused when the model loads); every
    other number is finite."""

    model_config = ConfigDict(strict=False, extra="allow")
    phase: Optional[str] = None
    epoch: int = Field(ge=0)
    train_loss: Optional[Loss] = None  # type: ignore[valid-type]
    train_accuracy: Optional[Finite] = None  # type: ignore[valid-type]
    val_loss: Optional[Loss] = None  # type: ignore[valid-type]
    val_accuracy: Optional[Finite] = None  # type: ignore[valid-type]
    lr: Optional[Finite] = None  # type: ignore[valid-type]
    seconds: Optional[Finite] = None  # type: ignore[valid-type]
    best: Optional[bool] = None


#: interpolations timm's transforms know
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos", "random")


class PreprocessConfig(_File):
    """A model's preprocessing (:class:`convlens.models.preprocess.Preprocess`) as JSON:
    ``input_size`` (C, H, W) within the bounds, one finite mean and one std > 0 per channel (or one
    for all), ``crop_pct`` in (0, 1]."""

    input_size: InputSize = [3, 224, 224]
    mean: Annotated[list[Any], Field(min_length=1, max_length=MAX_CHANNELS), AfterValidator(_finite_list)] = \
        [0.485, 0.456, 0.406]
    std: Annotated[list[Any], Field(min_length=1, max_length=MAX_CHANNELS), AfterValidator(_finite_list)] = \
        [0.229, 0.224, 0.225]
    interpolation: Literal[INTERPOLATIONS] = "bicubic"  # type: ignore[valid-type]
    crop_pct: Annotated[Any, AfterValidator(finite32)] = 0.875
    crop_mode: Literal["center", "squash", "border"] = "center"

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v):
            raise ValueError("every std must be > 0")
        return v

    @field_validator("crop_pct")
    @classmethod
    def _crop(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("must be in (0, 1]")
        return v

    @model_validator(mode="after")
    def _per_channel(self) -> "PreprocessConfig":
        c = self.input_size[0]
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, c):
                raise ValueError(f"{name} needs one value per channel ({c}) or one for all")
        return self


class CheckpointSource(_File):
    kind: str
    name: Optional[str] = None
    path: Optional[str] = None


class CheckpointMeta(_File):
    """The JSON beside a checkpoint's weights (:meth:`LensModel.save`)."""

    source: CheckpointSource
    class_names: Optional[Annotated[list[str], Field(max_length=MAX_CLASSES)]] = None
    preprocess: Optional[PreprocessConfig] = None


class AuditState(_File):
    """An audit's ``audit.json`` (the manifest the audit flow writes and reads back to resume or to
    list audits): its ``state``, what it audits and how it cut the work. The audit flow checks it
    with ``check_file(path, obj, AuditState, SpecError)``."""

    format: str
    state: Literal["running", "done", "failed", "interrupted", "incomplete"]
    model: Optional[str] = None
    data: Optional[str] = None
    items: Optional[int] = Field(default=None, ge=0)
    method: Optional[str] = None
    layer: Optional[str] = None
    target: Optional[str] = None
    top_k: Optional[int] = Field(default=None, ge=1, le=1000)
    shard_size: Optional[int] = Field(default=None, ge=1, le=1 << 20)
    map_size: Optional[int] = Field(default=None, ge=4, le=MAX_IMAGE_SIDE)
    shards: Optional[int] = Field(default=None, ge=0)
    class_names: Optional[ClassNames] = None
    preprocess: Optional[PreprocessConfig] = None
    images: Optional[int] = Field(default=None, ge=0)
    skipped: Optional[int] = Field(default=None, ge=0)
    replace: Optional[Literal[REPLACEMENTS]] = None  # type: ignore[valid-type]


__all__ = [
    "AuditOptions", "AuditState", "CheckpointMeta", "CheckpointSource", "DataConfig", "ExplainOptions",
    "FLOAT32_MAX", "Finite", "HistoryRow", "INTERPOLATIONS", "KernelOptions", "MAX_BATCH", "MAX_CHANNELS",
    "MAX_CLASSES", "MAX_IMAGE_SIDE", "MAX_JSON_BYTES", "MAX_KERNEL_SIDE", "MAX_LAB_MACS", "MAX_LAB_VALUES",
    "MAX_LAYERS", "MAX_NESTING", "MAX_PADDING", "MAX_REPEAT", "MAX_SPEC_ACTIVATIONS", "MAX_SPEC_PARAMETERS",
    "MAX_STEPS", "Normalization", "PreprocessConfig", "REPLACEMENTS", "RunConfig", "RunMetrics", "RunSplits",
    "ScoreOptions", "TrainOptions", "VisualizeOptions", "ArchConfig", "check_file", "check_options", "finite32",
    "parse_json", "read_json", "whole",
]
