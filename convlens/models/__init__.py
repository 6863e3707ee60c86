"""Models: :class:`LensModel`, the zoo of sources, architectures from a spec, run directories,
and the one function that resolves names to a LensModel (:func:`load_model`)."""

from .arch import BUILTIN, build_arch, load_weights, parse_arch, read_state_dict
from .labels import default_labels, imagenet_labels, resolve_label
from .layers import LayerInfo, LayerTable, build_layer_table, stage_layers
from .layout import channels_last, is_channels_last, to_channels_last
from .lensmodel import ClassScore, LensModel, Prediction, as_list
from .preprocess import Preprocess
from .registry import load_model, resolve_device
from .run import Run, load_run_model
from .zoo import wrap_module

__all__ = [
    "BUILTIN", "ClassScore", "LayerInfo", "LayerTable", "LensModel", "Prediction", "Preprocess", "Run",
    "as_list", "build_arch", "build_layer_table", "channels_last", "default_labels", "imagenet_labels",
    "is_channels_last", "load_model", "load_run_model", "load_weights", "parse_arch", "read_state_dict",
    "resolve_device", "resolve_label", "stage_layers", "to_channels_last", "wrap_module",
]
