"""Models: :class:`LensModel` and the one function that resolves names to it."""

from .labels import default_labels, imagenet_labels, resolve_label
from .layers import LayerInfo, LayerTable, build_layer_table, stage_layers
from .lensmodel import ClassScore, LensModel, Prediction
from .preprocess import Preprocess
from .layout import channels_last, is_channels_last, to_channels_last
from .registry import BUILTIN, load_model, load_weights, read_state_dict, wrap_module

__all__ = [
    "BUILTIN", "ClassScore", "LayerInfo", "LayerTable", "LensModel", "Prediction", "Preprocess",
    "build_layer_table", "default_labels", "imagenet_labels", "load_model", "load_weights",
    "read_state_dict", "resolve_label", "stage_layers", "wrap_module", "channels_last", "is_channels_last",
    "to_channels_last",
]
