"""Keras 3 on the torch backend, and Keras model files (``.keras``, ``.h5``) read with one clear
line per problem.

The backend must be torch: ``KERAS_BACKEND=torch`` is set before Keras is first imported; Keras
imported earlier with another backend is a clear error. A TF-Keras 2 ``.h5`` whose Sequential holds
a nested Functional base (the transfer-learning pattern), which Keras 3 refuses (``Layer "..."
expects 1 input(s), but it received 2 input tensors``), is rebuilt from the file's ``model_config``
with the nested base's inbound nodes rewritten the Keras 3 way, and its weights read from the file
layer by layer.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ...options import MAX_JSON_BYTES, parse_json

#: File suffixes read as Keras models.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
INSTALL_HINT = "pip install 'convlens[keras]'"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_IMPORT_LOCK = threading.Lock()


# -- the backend ---------------------------------------------------------------
def import_keras():
    """Keras 3 on the torch backend, setting ``KERAS_BACKEND=torch`` before its first import.

    Returns:
        module: the ``keras`` module.

    Raises:
        ModelError: Keras is missing or older than 3, ``KERAS_BACKEND`` names another backend, or
            Keras was imported with another backend before convlens.
    """
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
    """Whether ``obj`` is a Keras model, found without importing Keras.

    Args:
        obj: anything.

    Returns:
        bool: True for a Keras model object (its class from the ``keras`` package, with ``layers``
            and ``get_config``).
    """
    return type(obj).__module__.split(".")[0] == "keras" and hasattr(obj, "layers") and hasattr(obj, "get_config")


def is_model(op: Any) -> bool:
    """Whether a Keras operation is a model itself (a nested Sequential or Functional base).

    Args:
        op: a Keras layer or operation.

    Returns:
        bool: True when ``op`` has layers and runs them as a graph or in sequence.
    """
    return hasattr(op, "layers") and (hasattr(op, "_run_through_graph") or type(op).__name__ == "Sequential")


# -- reading files -------------------------------------------------------------
def load_keras_file(path: str | os.PathLike):
    """A Keras model from a file, each problem one clear line.

    Args:
        path: a Keras 3 ``.keras`` archive or a TF-Keras 2 / Keras 3 ``.h5`` file.

    Returns:
        keras.Model: the Keras model (not compiled).

    Raises:
        ModelError: the file is missing, not what its suffix says, holds only weights, uses a
            custom layer, or cannot be rebuilt by Keras.
    """
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
    return any(isinstance(layer, dict) and layer.get("class_name") in ("Functional", "Model", "Sequential")
               for layer in layers)


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
            if is_model(layer) and isinstance(getattr(layer, "output", None), (list, tuple)):
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
