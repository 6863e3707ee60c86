"""Keras-light verbs over :class:`~convlens.models.LensModel`: one call from a model name to an
answer (``convlens.predict``, ``convlens.layers``)."""

from __future__ import annotations

from typing import Any

from .models import LayerTable, LensModel, Prediction, load_model


def _model(model: Any) -> LensModel:
    return model if isinstance(model, LensModel) else load_model(model)


def predict(images: Any, model: Any = "effnet-lite0", top_k: int = 5,
            batch_size: int | None = None) -> list[Prediction]:
    """Top-k predictions for one or many images, without loading the model by hand.

    Args:
        images: a path, a folder, a PIL image, an array, a tensor, or a list of them.
        model: anything :func:`~convlens.models.load_model` takes (default: the built-in
            EfficientNet-Lite0, offline).
        top_k: the classes kept per image, best first.
        batch_size: images per forward pass (default: the model's own).

    Returns:
        list[Prediction]: one per image, in order: the top classes with their probabilities.

    Raises:
        ModelError: a model that cannot be resolved or loaded.
        ImageError: an image that cannot be read.
        SpecError: a ``top_k`` or ``batch_size`` out of bounds.

    Examples:
        >>> predict("cat.jpg", top_k=3)[0].top.label     # doctest: +SKIP
        'tiger cat'
    """
    return _model(model).predict(images, top_k=top_k, batch_size=batch_size)


def layers(model: Any = "effnet-lite0") -> LayerTable:
    """The layer table of a model: every module's name, type, output shape and parameters.

    The names are what the other verbs take as ``layer`` (``journey``, ``explain``, ``visualize``).

    Args:
        model: anything :func:`~convlens.models.load_model` takes (default: the built-in model).

    Returns:
        LayerTable: the table; it prints as text and shows as HTML in Jupyter.

    Raises:
        ModelError: a model that cannot be resolved or loaded.
    """
    return _model(model).layers()
