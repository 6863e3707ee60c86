"""Keras models (``.keras``, ``.h5``) seen inside: Keras 3 on its torch backend, every layer a torch
module that takes and gives ``(N, C, H, W)``.

Three rooms, read in this order:

* :mod:`~convlens.models.keras.load`: the backend (``KERAS_BACKEND=torch``) and the files, each
  problem one clear line; a TF-Keras 2 ``.h5`` with a nested base model is rebuilt;
* :mod:`~convlens.models.keras.adapters`: each Keras layer behind a small torch module
  (:class:`KerasLayer`, :class:`KerasConv2d`), the model's own graph run over them
  (:class:`KerasNet`), a softmax/sigmoid ending turned into pre-activation scores;
* :mod:`~convlens.models.keras.wrap`: the preprocessing read from the model and the
  :class:`~convlens.models.lensmodel.LensModel` around it (:func:`wrap_keras`).

Class-name files (``--classes``, ``classes.txt`` beside the model) are read by
:mod:`convlens.models.labels`, which every model source shares; :func:`read_class_names` and
:func:`side_class_names` stay importable from here.
"""

from ..labels import read_class_names, side_class_names
from .adapters import KerasConv2d, KerasLayer, KerasNet, to_nchw, to_nhwc
from .load import HDF5_MAGIC, INSTALL_HINT, KERAS_SUFFIXES, import_keras, is_keras_model, is_model, load_keras_file
from .wrap import channel_values, keras_preprocess, wrap_keras

__all__ = [
    "HDF5_MAGIC", "INSTALL_HINT", "KERAS_SUFFIXES", "KerasConv2d", "KerasLayer", "KerasNet", "channel_values",
    "import_keras", "is_keras_model", "is_model", "keras_preprocess", "load_keras_file", "read_class_names",
    "side_class_names", "to_nchw", "to_nhwc", "wrap_keras",
]
