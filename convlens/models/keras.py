"""Keras models (``.keras``, ``.h5``) seen inside: Keras 3 on its torch backend, every layer a
torch module that takes and gives ``(N, C, H, W)``.

On the torch backend a Keras layer *is* a ``torch.nn.Module``, but a Keras model does not
register its layers as torch children (they sit in Keras' own tracked lists), and its feature
maps are channels-last ``(N, H, W, C)``. So a loaded model is wrapped, not converted: each
Keras layer gets one small adapter module (:class:`KerasLayer`) named as Keras names it
(``conv2d_1``, ``max_pooling2d``; ``base.block5_conv3`` inside a nested base model) that
permutes 4-D tensors to channels-last before the Keras layer runs and back after it. The
model's own graph runs over the adapters (Sequential: in order; Functional: Keras'
``_run_through_graph`` with each operation mapped to its adapter), so the tensors *between*
layers are ``(N, C, H, W)`` and every view (journey, every CAM, feature visualisation,
filters, examples, score) captures them through :class:`~convlens.probe.Probe` unchanged:
the Probe stays the one hook owner and never learns about layouts. The permutes are views;
Keras' torch convolutions transpose to ``NCHW`` themselves, so the round trip costs nothing.

* Parameters: each adapter registers its layer's own Keras variables (the very
  ``torch.nn.Parameter`` objects Keras computes with), so counts equal Keras'
  ``model.summary()`` and in-place changes (``convlens sanity``) change the Keras model.
  A ``Conv2D`` adapter is an ``nn.Conv2d`` whose ``weight`` reads the Keras kernel
  ``(kh, kw, in, out)`` as ``(out, in, kh, kw)``, so the filter views work as on torch models.
* Scores: a model ending in softmax (a ``Dense(activation="softmax")``, or an ``Activation``
  / ``Softmax`` layer) gives its pre-softmax scores (the Dense without its activation), so
  CAMs and attributions use the score the Grad-CAM paper defines, and
  ``LensModel.probabilities`` (a softmax of them) equals Keras' probabilities. A one-unit
  sigmoid output ``z`` becomes the two scores ``(-z/2, z/2)``: softmax gives ``1 - p, p``.
* Preprocessing from the model: the input shape (grayscale when it has one channel), raw
  0-255 pixels when the model starts with a ``Rescaling`` layer, else pixels in ``[0, 1]``
  (what ``x / 255`` course notebooks fed); ``scale``/``mean``/``std`` override it: the model
  is fed ``(pixel * scale - mean) / std`` with pixels in ``0..255``.
* Files: Keras 3 ``.keras`` archives and TF-Keras 2 / Keras 3 ``.h5`` files. A TF-Keras 2
  ``.h5`` whose Sequential holds a nested Functional base (the transfer-learning pattern),
  which Keras 3 refuses (``Layer "..." expects 1 input(s), but it received 2 input
  tensors``), is rebuilt from the file's ``model_config`` with the nested base's inbound nodes
  rewritten the Keras 3 way, and its weights read from the file layer by layer.

The backend must be torch: ``KERAS_BACKEND=torch`` is set before Keras is first imported;
Keras imported earlier with another backend is a clear error.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ModelError, SpecError
from ..options import MAX_IMAGE_SIDE, MAX_JSON_BYTES, parse_json
from .labels import default_labels
from .lensmodel import LensModel
from .preprocess import Preprocess

__all__ = [
    "KERAS_SUFFIXES", "KerasConv2d", "KerasLayer", "KerasNet", "channel_values", "import_keras", "is_keras_model",
    "keras_preprocess", "load_keras_file", "read_class_names", "side_class_names", "wrap_keras",
]

#: File suffixes read as Keras models.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
INSTALL_HINT = "pip install 'convlens[keras]'"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_IMPORT_LOCK = threading.Lock()


# -- the backend ---------------------------------------------------------------
def import_keras():
    """Keras 3 on the torch backend (setting ``KERAS_BACKEND=torch`` first); clear errors when
    Keras is missing, too old, or already imported with another backend."""
    with _IMPORT_LOCK:
        if "keras" not in sys.modules:
            wanted = os.environ.get("KERAS_BACKEND")
            if wanted and wanted != "torch":
                raise ModelError(f"KERAS_BACKEND={wanted}: convlens runs Keras models on the torch backend; "
                                 "unset KERAS_BACKEND or set it to torch")
            os.environ["KERAS_BACKEND"] = "torch"
        try:
            import keras
        except ImportError as exc:
            raise ModelError(f"reading Keras models needs Keras 3 and h5py: {INSTALL_HINT} ({exc})") from None
        version = getattr(keras, "__version__", "0")
        if int(version.split(".")[0]) < 3:
            raise ModelError(f"Keras {version} is installed; convlens needs Keras 3: {INSTALL_HINT}")
        backend = keras.backend.backend()
        if backend != "torch":
            raise ModelError(f"Keras was imported with the {backend} backend before convlens; convlens runs "
                             "Keras models on the torch backend: set KERAS_BACKEND=torch before importing keras")
        return keras


def is_keras_model(obj: Any) -> bool:
    """True for a Keras model object (without importing Keras)."""
    return type(obj).__module__.split(".")[0] == "keras" and hasattr(obj, "layers") and hasattr(obj, "get_config")


# -- reading files -------------------------------------------------------------
def load_keras_file(path: str | os.PathLike):
    """A Keras model from a ``.keras`` archive or an ``.h5`` file, each problem one clear line."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such Keras model file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelError(f"{path}: not a Keras 3 .keras archive (not a zip file)")
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelError(f"{path}: not a Keras 3 .keras archive (no config.json inside)")
            size = zf.getinfo("config.json").file_size
            if size > MAX_JSON_BYTES:
                raise ModelError(f"{path}: its config.json is {size} bytes (at most {MAX_JSON_BYTES >> 20} MiB)")
            # checked before Keras reads it: no NaN, no float32 overflow, no nesting past MAX_NESTING
            parse_json(zf.read("config.json").decode("utf-8", errors="replace"), f"{path}: config.json", ModelError)
    elif head != HDF5_MAGIC:
        raise ModelError(f"{path}: not an HDF5 file (a Keras .h5 model starts with the HDF5 signature)")
    keras = import_keras()
    with warnings.catch_warnings():  # Keras' deprecation notes about old configs are not the user's business
        warnings.simplefilter("ignore")
        if path.suffix != ".keras":
            return _load_h5(keras, path)
        try:
            return keras.saving.load_model(str(path), compile=False)
        except Exception as exc:  # Keras raises TypeError/ValueError with a long text
            raise ModelError(f"{path}: Keras cannot rebuild this model: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    """One line from a Keras exception: a custom layer named, else the first line."""
    text = str(exc)
    if "Could not locate class" in text or "Unknown layer" in text or "custom_objects" in text:
        import re

        m = re.search(r"(?:Could not locate class|Unknown layer:?) '?([A-Za-z0-9_>.]+)'?", text)
        what = f"custom layer {m.group(1).strip('.')!r}" if m else "a custom layer or function"
        return (f"it uses the {what}, which is not part of Keras; load the model in Python with the "
                "class defined (keras.saving.load_model(PATH, custom_objects=...)) and pass the model "
                "object to convlens.load_model")
    first = " ".join(text.split("\n")[0].split())
    return (first[:300] + "...") if len(first) > 300 else (first or type(exc).__name__)


def _h5_config(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            groups = set(f.keys())
    except OSError as exc:
        raise ModelError(f"{path}: cannot read this HDF5 file ({exc})") from None
    if raw is None:
        if groups:
            raise ModelError(f"{path}: this .h5 holds only weights (model.save_weights), not a model; "
                             "save the whole model with model.save('model.h5') or model.save('model.keras')")
        raise ModelError(f"{path}: an HDF5 file without a Keras model in it")
    if hasattr(raw, "decode"):
        raw = raw.decode("utf-8", errors="replace")
    if len(raw) > MAX_JSON_BYTES:
        raise ModelError(f"{path}: its model_config is too large (at most {MAX_JSON_BYTES >> 20} MiB)")
    try:
        return parse_json(raw, "model_config", ModelError)
    except ModelError as exc:
        raise ModelError(f"{path}: its model_config is not valid JSON ({str(exc).removeprefix('model_config: ')})") \
            from None


def _load_h5(keras, path: Path):
    config = _h5_config(path)
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:
        first = _why(exc)
        if "custom layer" in first:
            raise ModelError(f"{path}: Keras cannot rebuild this model: {first}") from None
        if not _nested(config):
            raise ModelError(f"{path}: Keras cannot rebuild this model: {first}") from None
    # Keras 3 misreads the inbound nodes of a nested model in a TF-Keras 2 Sequential: rebuild.
    try:
        model = _rebuild_nested(keras, config)
        _load_h5_weights(path, model)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: Keras cannot rebuild this model: {_why(exc)}") from None
    return model


def _nested(config: dict[str, Any]) -> bool:
    layers = (config.get("config") or {}).get("layers") or []
    return any(isinstance(l, dict) and l.get("class_name") in ("Functional", "Model", "Sequential")
               for l in layers)


def _rebuild_nested(keras, config: dict[str, Any]):
    """A TF-Keras 2 Sequential config holding nested models, built layer by layer with Keras 3:
    each layer from its own (legacy) config, a nested model's single output unwrapped from the
    one-element list Keras 3 makes of it, then the Sequential around them."""
    from keras.src.legacy.saving import saving_options, saving_utils

    cls, cfg = config.get("class_name"), config.get("config") or {}
    if cls != "Sequential":
        raise ModelError("only a Sequential around nested base models can be rebuilt; "
                         "re-save the model with Keras 3 as model.keras")
    built, input_shape = [], None
    with saving_options.keras_option_scope(use_legacy_config=True):
        for lc in cfg.get("layers") or []:
            c = lc.get("config") or {}
            shape = c.get("batch_input_shape") or c.get("batch_shape")
            if input_shape is None and shape:
                input_shape = shape
            if lc.get("class_name") == "InputLayer":
                continue
            layer = saving_utils.model_from_config({"class_name": lc["class_name"], "config": c})
            if _is_model(layer) and isinstance(getattr(layer, "output", None), (list, tuple)):
                outs = layer.outputs
                if len(outs) == 1:
                    trainable = layer.trainable
                    layer = keras.Model(layer.inputs[0] if len(layer.inputs) == 1 else layer.inputs, outs[0],
                                        name=layer.name)
                    layer.trainable = trainable
            built.append(layer)
    if input_shape is None:
        inner = next((b for b in built if getattr(b, "inputs", None)), None)
        if inner is None:
            raise ModelError("the model's config gives no input shape")
        input_shape = [None, *inner.inputs[0].shape[1:]]
    return keras.Sequential([keras.Input(tuple(input_shape[1:])), *built], name=cfg.get("name") or "sequential")


def _load_h5_weights(path: Path, model) -> None:
    """Weights from an ``.h5``'s ``model_weights`` group, matched by layer name (nested models'
    layers by their own names, as TF-Keras 2 stores them)."""
    import h5py

    from keras.src.legacy.saving.legacy_h5_format import load_weights_from_hdf5_group

    with h5py.File(path, "r") as f:
        load_weights_from_hdf5_group(f["model_weights"], model)


# -- adapters ------------------------------------------------------------------
def to_nhwc(obj: Any) -> Any:
    """4-D tensors ``(N, C, H, W)`` -> ``(N, H, W, C)`` views, through lists, tuples and dicts."""
    if isinstance(obj, torch.Tensor):
        return obj.permute(0, 2, 3, 1) if obj.dim() == 4 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_nhwc(o) for o in obj)
    if isinstance(obj, dict):
        return {k: to_nhwc(v) for k, v in obj.items()}
    return obj


def to_nchw(obj: Any) -> Any:
    """4-D tensors ``(N, H, W, C)`` -> ``(N, C, H, W)``; the inverse of :func:`to_nhwc`."""
    if isinstance(obj, torch.Tensor):
        return obj.permute(0, 3, 1, 2) if obj.dim() == 4 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_nchw(o) for o in obj)
    if isinstance(obj, dict):
        return {k: to_nchw(v) for k, v in obj.items()}
    return obj


def _param_name(name: str, taken: set[str]) -> str:
    base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "w"
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def _keras_params(op: Any) -> list[tuple[str, nn.Parameter, bool]]:
    """(name, the Keras variable's torch Parameter, trainable) for each weight of a layer."""
    out = []
    trainable_ids = {id(v) for v in getattr(op, "trainable_weights", [])}
    for v in getattr(op, "weights", []):
        p = getattr(v, "value", None)
        if isinstance(p, nn.Parameter):
            out.append((v.name, p, id(v) in trainable_ids))
    return out


class _Callable:
    """Holds a Keras operation out of torch's sight (a plain attribute is not a child module)."""

    def __init__(self, op: Any):
        self.op = op


class KerasLayer(nn.Module):
    """One Keras layer as a torch module: ``(N, C, H, W)`` in and out, the layer's own Keras
    variables as its parameters. ``scores``: run a final softmax/sigmoid layer for its
    pre-activation scores (see the module docstring)."""

    keras_class = "Layer"

    def __init__(self, op: Any, scores: str | None = None):
        super().__init__()
        self._op = _Callable(op)
        self.keras_name = str(getattr(op, "name", type(op).__name__))
        self.keras_class = type(op).__name__
        self.scores = scores
        self._training_arg = bool(getattr(op, "_call_has_training_arg", False))
        taken: set[str] = set(self._parameters) | set(self._modules)
        self.param_names: dict[str, str] = {}
        for vname, p, trainable in _keras_params(op):
            if not trainable:
                p.requires_grad_(False)  # frozen in Keras (layer.trainable = False, BN statistics)
            pname = _param_name(vname, taken)
            self.register_parameter(pname, p)
            self.param_names[vname] = pname

    @property
    def op(self) -> Any:
        """The Keras layer (or operation) this module runs."""
        return self._op.op

    def extra_repr(self) -> str:
        return f"{self.keras_name!r}, {self.keras_class}"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.scores == "skip":  # the model's final Activation("softmax") / Softmax
            return args[0]
        if self._training_arg:
            kwargs.setdefault("training", False)
        args, kwargs = to_nhwc(args), to_nhwc(kwargs)
        if self.scores in ("linear", "linear_sigmoid"):
            out = self._pre_activation(*args)
        elif self.scores == "log":
            out = torch.log(self.op(*args, **kwargs).clamp_min(1e-30))
        elif self.scores == "logit":
            p = self.op(*args, **kwargs).clamp(1e-7, 1 - 1e-7)
            out = torch.log(p) - torch.log1p(-p)
        else:
            out = self.op(*args, **kwargs)
        if self.scores in ("linear_sigmoid", "logit") and isinstance(out, torch.Tensor) and out.shape[-1] == 1:
            out = torch.cat([-out / 2, out / 2], dim=-1)
        return to_nchw(out)

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """A Dense layer without its activation: ``x @ kernel + bias`` on the last axis."""
        layer = self.op
        out = torch.matmul(x, layer.kernel.value if hasattr(layer.kernel, "value") else layer.kernel)
        if getattr(layer, "use_bias", False) and layer.bias is not None:
            out = out + (layer.bias.value if hasattr(layer.bias, "value") else layer.bias)
        return out


def _int_padding(padding: str, kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, int]:
    if padding == "same":
        return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))  # type: ignore[return-value]
    return (0, 0)


class KerasConv2d(nn.Conv2d):
    """A Keras ``Conv2D`` / ``DepthwiseConv2D`` as a torch ``nn.Conv2d`` that runs the Keras layer.

    ``weight`` is the Keras kernel ``(kh, kw, in, out)`` read as ``(out, in, kh, kw)``
    (depthwise ``(kh, kw, in, m)`` as ``(in * m, 1, kh, kw)``): a view, the same numbers. The
    parameters are the Keras variables themselves (``kernel``, ``bias``).
    """

    def __init__(self, op: Any):
        cfg = op.get_config()
        depthwise = type(op).__name__ == "DepthwiseConv2D"
        kernel = op.kernel.value
        kh, kw, cin, cout = kernel.shape
        if depthwise:
            cin, cout, groups = cin, cin * cout, cin
        else:
            groups = int(cfg.get("groups", 1) or 1)
            cin = cin * groups
        dilation = tuple(cfg.get("dilation_rate", (1, 1)))
        stride = tuple(cfg.get("strides", (1, 1)))
        super().__init__(int(cin), int(cout), (int(kh), int(kw)), stride=stride,
                         padding=_int_padding(cfg.get("padding", "valid"), (kh, kw), dilation),
                         dilation=dilation, groups=groups, bias=False, device="meta")
        del self._parameters["weight"]
        self.depthwise = depthwise
        inner = KerasLayer(op)  # runs the layer; kept out of torch's sight, its parameters are ours
        for pname, p in inner.named_parameters(recurse=False):
            self.register_parameter(pname, p)
        object.__setattr__(self, "_inner", inner)
        self.keras_name = self._inner.keras_name
        self.keras_class = self._inner.keras_class
        self.scores = None

    @property
    def op(self) -> Any:
        return self._inner.op

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        k = self.op.kernel.value
        if self.depthwise:  # (kh, kw, in, m) -> (in * m, 1, kh, kw)
            kh, kw, cin, m = k.shape
            return k.permute(2, 3, 0, 1).reshape(cin * m, 1, kh, kw)
        return k.permute(3, 2, 0, 1)

    def extra_repr(self) -> str:
        return f"{self.keras_name!r}, {self.keras_class}, " + super().extra_repr()

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._inner(*args, **kwargs)


def _adapter_class(base: type, keras_class: str) -> type:
    """A subclass of ``base`` named after the Keras class (the layer table's Type column)."""
    key = (base, keras_class)
    cls = _CLASSES.get(key)
    if cls is None:
        cls = type(keras_class, (base,), {"__module__": __name__, "__qualname__": keras_class})
        _CLASSES[key] = cls
    return cls


_CLASSES: dict[tuple[type, str], type] = {}


def _is_model(op: Any) -> bool:
    return hasattr(op, "layers") and (hasattr(op, "_run_through_graph") or type(op).__name__ == "Sequential")


def _activation_name(op: Any) -> str:
    act = getattr(op, "activation", None)
    return str(getattr(act, "__name__", "") or "")


class KerasNet(nn.Module):
    """A Keras model (Sequential or Functional) over adapter modules named as Keras names its
    layers; ``forward`` takes and returns torch tensors with feature maps ``(N, C, H, W)``.

    Nested models (a transfer-learning base) are KerasNets themselves, their layers below them
    (``base.block5_conv3``). At the top, ``scores`` says how a softmax/sigmoid ending was
    turned into pre-activation scores (``output_activation``: ``softmax``, ``sigmoid`` or
    ``None``). ``native_layout``: Keras' own layout, for the layer table's printed shapes.
    """

    native_layout = "channels_last"

    def __init__(self, model: Any, top: bool = True):
        super().__init__()
        self._model = _Callable(model)
        self.keras_name = str(model.name)
        self.keras_class = type(model).__name__
        self.sequential = not hasattr(model, "_run_through_graph") or type(model).__name__ == "Sequential"
        self.output_activation: str | None = None
        self.top = top
        final = self._final_op(model) if top else None
        ending = self._ending(final) if final is not None else None
        self._by_id: dict[int, nn.Module] = {}
        for op in self._ops(model):
            if id(op) in self._by_id:
                continue
            scores = ending if op is final else None
            if _is_model(op) and scores is None:
                mod: nn.Module = _adapter_class(KerasNet, type(op).__name__)(op, top=False)
            elif type(op).__name__ in ("Conv2D", "DepthwiseConv2D") and scores is None and getattr(op, "kernel", None) is not None:
                mod = _adapter_class(KerasConv2d, type(op).__name__)(op)
            else:
                mod = _adapter_class(KerasLayer, type(op).__name__)(op, scores=scores)
            name = _param_name(str(getattr(op, "name", "layer")), set(self._modules) | set(self._parameters))
            self.add_module(name, mod)
            self._by_id[id(op)] = mod

    @property
    def model(self) -> Any:
        """The Keras model."""
        return self._model.op

    @staticmethod
    def _ops(model: Any) -> list[Any]:
        if type(model).__name__ == "Sequential" or not hasattr(model, "_run_through_graph"):
            return list(model.layers)
        ops = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input or type(op).__name__ == "InputLayer":
                    continue
                ops.append(op)
        return ops

    @staticmethod
    def _final_op(model: Any) -> Any:
        if type(model).__name__ == "Sequential":
            return model.layers[-1] if model.layers else None
        outs = getattr(model, "outputs", None) or []
        if len(outs) != 1:
            return None
        history = getattr(outs[0], "_keras_history", None)
        return getattr(history, "operation", None) if history is not None else None

    def _ending(self, op: Any) -> str | None:
        """How the final operation's output becomes pre-activation scores (None: it already is)."""
        cls = type(op).__name__
        act = _activation_name(op)
        if cls == "Softmax" or (cls == "Activation" and act == "softmax"):
            self.output_activation = "softmax"
            return "skip"
        if cls == "Dense" and act in ("softmax", "sigmoid"):
            self.output_activation = act
            return "linear" if act == "softmax" else "linear_sigmoid"
        if act == "softmax":
            self.output_activation = "softmax"
            return "log"  # log-probabilities: softmax gives the probabilities back exactly
        if act == "sigmoid" or (cls == "Activation" and act == "sigmoid"):
            self.output_activation = "sigmoid"
            return "logit"
        if _is_model(op):  # a model ending in a nested model: look inside
            return None
        return None

    def extra_repr(self) -> str:
        return f"{self.keras_name!r}, {self.keras_class}"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        model = self.model
        if self.sequential:
            x = args[0]
            for mod in self._modules.values():
                x = mod(x)
            return x
        inputs = args[0] if len(args) == 1 else list(args)
        out = model._run_through_graph(inputs, operation_fn=lambda op: self._by_id[id(op)])
        if self.top and isinstance(out, (list, tuple)) and len(out) == 1:
            out = out[0]  # keras.Model(inp, [out]): one output in a list, the classifier's scores
        return out


# -- preprocessing and classes -------------------------------------------------
def _first_layers(model: Any) -> list[Any]:
    """The layers a model starts with (through nested models at the front)."""
    out = []
    layers = list(getattr(model, "layers", []))
    while layers:
        first = layers[0]
        if type(first).__name__ == "InputLayer":
            layers = layers[1:]
            continue
        out.append(first)
        if _is_model(first):
            layers = list(first.layers)
            continue
        if type(first).__name__ in ("Rescaling", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation",
                                    "RandomZoom", "RandomTranslation", "RandomContrast", "RandomCrop"):
            layers = layers[1:]
            continue
        break
    return out


def keras_preprocess(model: Any, scale: float | None = None, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> Preprocess:
    """The model's input size and pixel scale as a :class:`Preprocess` (see the module docstring)."""
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else (None, None, None, 3)
    if len(shape) != 4:
        raise ModelError(f"the Keras model takes inputs of shape {shape}; convlens needs images "
                         "(batch, height, width, channels)")
    h, w, c = shape[1] or 224, shape[2] or 224, shape[3] or 3
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ModelError(f"the Keras model takes {w}x{h} inputs; convlens handles at most {MAX_IMAGE_SIDE} pixels "
                         "a side")
    if c not in (1, 3):
        raise ModelError(f"the Keras model takes {c}-channel images; convlens reads grayscale (1) or RGB (3)")
    rescales = any(type(l).__name__ == "Rescaling" for l in _first_layers(model))
    if scale is None:
        scale = 1.0 if rescales else 1 / 255
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise SpecError(f"scale must be a positive number (got {scale!r})", param="scale")
    mean_t = channel_values(mean, c, "mean", 0.0)
    std_t = channel_values(std, c, "std", 1.0)
    if any(s <= 0 for s in std_t):
        raise SpecError(f"std must be positive (got {list(std_t)})", param="std")
    k = 255.0 * float(scale)  # the model gets (p * 255 * scale - mean) / std for p in [0, 1]
    return Preprocess(input_size=(int(c), int(h), int(w)), mean=tuple(m / k for m in mean_t),
                      std=tuple(s / k for s in std_t), interpolation="bilinear", crop_pct=1.0,
                      crop_mode="squash")


def channel_values(values: Sequence[float] | float | None, c: int, name: str, default: float) -> tuple[float, ...]:
    """One value per channel from one number or ``c`` numbers (``default`` for None); bad ones a SpecError."""
    if values is None:
        return (default,) * c
    vals = (values,) if isinstance(values, (int, float)) else tuple(values)
    try:
        vals = tuple(float(v) for v in vals)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be numbers (got {values!r})", param=name) from None
    if len(vals) == 1:
        vals = vals * c
    if len(vals) != c or not all(math.isfinite(v) for v in vals):
        raise SpecError(f"{name} needs {'1 value' if c == 1 else f'1 or {c} values'} (finite) for a {c}-channel model "
                        f"(got {list(vals)})", param=name)
    return vals


def read_class_names(path: str | os.PathLike, n: int | None = None, param: str = "classes") -> list[str]:
    """Class names from a file: ``.json`` (a list, ``{"0": "cat"}`` or ``{"cat": 0}``) or text
    (one name per line, blank lines skipped); ``n``: the model's number of outputs."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{param} {path}: no such file", param=param)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{param} {path}: cannot read it as text ({exc.__class__.__name__})", param=param) from None
    if path.suffix.lower() == ".json":
        try:
            data = parse_json(text, "json", SpecError)  # nesting and non-finite numbers checked too
        except SpecError as exc:
            raise SpecError(f"{param} {path}: not valid JSON ({str(exc).removeprefix('json: ')})", param=param) \
                from None
        names = _json_names(data, path, param)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise SpecError(f"{param} {path}: no class names in it", param=param)
    if n is not None and len(names) != n:
        raise SpecError(f"{param} {path}: {len(names)} class names for a model with {n} outputs", param=param)
    return names


def _json_names(data: Any, path: Path, param: str) -> list[str]:
    if isinstance(data, dict) and "class_names" in data:
        data = data["class_names"]
    if isinstance(data, list) and all(isinstance(v, (str, int, float)) for v in data):
        return [str(v) for v in data]
    if isinstance(data, dict) and data:
        try:
            if all(str(k).strip().lstrip("-").isdigit() for k in data):  # {"0": "cat"}
                pairs = {int(k): str(v) for k, v in data.items()}
            else:  # {"cat": 0}, as Keras' class_indices
                pairs = {int(v): str(k) for k, v in data.items()}
        except (TypeError, ValueError):
            pairs = {}
        if pairs and sorted(pairs) == list(range(len(pairs))):
            return [pairs[i] for i in range(len(pairs))]
    raise SpecError(f"{param} {path}: expected a list of names, {{index: name}} or {{name: index}}", param=param)


def side_class_names(model_path: Path, n: int) -> list[str] | None:
    """Class names from a file beside the model: ``NAME.classes.txt``/``.json`` or
    ``classes.txt``/``classes.json`` in its folder; None when there is none."""
    folder, stem = model_path.parent, model_path.stem
    for cand in (f"{stem}.classes.json", f"{stem}.classes.txt", "classes.json", "classes.txt"):
        p = folder / cand
        if p.is_file():
            return read_class_names(p, n, param="model")
    return None


# -- the LensModel -------------------------------------------------------------
def wrap_keras(model: Any, *, path: Path | None = None, classes: "str | os.PathLike | Sequence[str] | None" = None,
               scale: float | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               device: str = "cpu"):
    """A Keras model as a :class:`~convlens.models.lensmodel.LensModel` (see the module docstring)."""
    keras = import_keras()
    if not getattr(model, "built", True) or not getattr(model, "inputs", None):
        raise ModelError("the Keras model has no known input shape; build it (keras.Input((H, W, C))) "
                         "or call it once before passing it to convlens")
    pre = keras_preprocess(model, scale=scale, mean=mean, std=std)
    with keras.device("cpu"):
        net = KerasNet(model)
    net.eval()
    with torch.no_grad():
        out = net(torch.zeros(1, *pre.input_size))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError(f"the Keras model's output is {tuple(getattr(out, 'shape', ()))}; convlens explains "
                         "classifiers with one (batch, classes) output")
    n = int(out.shape[-1])
    if classes is None:
        names = (side_class_names(path, n) if path is not None else None) or default_labels(n)
    elif isinstance(classes, (str, os.PathLike)):
        names = read_class_names(classes, n)
    else:
        names = [str(c) for c in classes]
        if len(names) != n:
            raise SpecError(f"{len(names)} class names for a model with {n} outputs", param="classes")
    source = {"kind": "keras", "path": str(path) if path else None, "class": type(model).__name__,
              "output_activation": net.output_activation}
    return LensModel(net, pre, names, name=path.name if path else str(model.name), source=source,
                     device=device, channels_last=False)
