"""Keras-light verbs over :class:`~convlens.models.LensModel`."""

from __future__ import annotations

from typing import Any

from .models import LayerTable, LensModel, Prediction, load_model


def _model(model: Any) -> LensModel:
    return model if isinstance(model, LensModel) else load_model(model)


def predict(images: Any, model: Any = "effnet-lite0", top_k: int = 5, batch_size: int | None = None) -> list[Prediction]:
    """Top-k predictions for one or many images (paths, PIL images, arrays).

    >>> predict("cat.jpg", top_k=3)[0].top.label     # doctest: +SKIP
    'tiger cat'
    """
    return _model(model).predict(images, top_k=top_k, batch_size=batch_size)


def layers(model: Any = "effnet-lite0") -> LayerTable:
    """The layer table of a model (name, type, output shape, parameters)."""
    return _model(model).layers()
