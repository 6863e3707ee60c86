"""convlens: build, train and see inside convolutional image classifiers.

>>> import convlens as cl                                   # doctest: +SKIP
>>> model = cl.load_model()              # built-in EfficientNet-Lite0, offline
>>> model.predict("cat.jpg", top_k=3)
>>> cl.journey(model, "cat.jpg").save("journey/")
>>> cl.kernels.apply_kernel("cat.jpg", "sobel-x").save("lab/")

Names are imported lazily so ``import convlens`` stays cheap. Importing it changes nothing in the
host process; the ``convlens`` command sets the thread and allocator policy itself. A Python
session opts in to the allocator policy with one line (``convlens/_alloc.py``; ``explain`` and
``journey`` reuse freed memory instead of page-faulting it back in):

>>> cl.keep_freed_memory()                                  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "load_model": ("convlens.models", "load_model"),
    "LensModel": ("convlens.models", "LensModel"),
    "load_image": ("convlens.images", "load_image"),
    "predict": ("convlens.api", "predict"),
    "layers": ("convlens.api", "layers"),
    "journey": ("convlens.lens.journey", "journey"),
    "Probe": ("convlens.probe", "Probe"),
    "kernels": ("convlens.kernels", None),
    "explain": ("convlens.lens.cam", "explain"),
    "factorize": ("convlens.lens.factorize", "factorize"),
    "Softmax": ("convlens.lens.cam", "Softmax"),
    "Sigmoid": ("convlens.lens.cam", "Sigmoid"),
    "Versus": ("convlens.lens.cam", "Versus"),
    "RawOutput": ("convlens.lens.cam", "RawOutput"),
    "Segmentation": ("convlens.lens.cam", "Segmentation"),
    "Embedding": ("convlens.lens.cam", "Embedding"),
    "visualize": ("convlens.lens.featurevis", "visualize"),
    "score": ("convlens.lens.score", "score"),
    "sanity": ("convlens.lens.sanity", "sanity"),
    "train": ("convlens.train", "train"),
    "evaluate": ("convlens.train", "evaluate"),
    "compare": ("convlens.train.compare", "compare"),
    "audit": ("convlens.audit", "audit"),
    "report": ("convlens.report", "report"),
    "ConvlensError": ("convlens.errors", "ConvlensError"),
    "keep_freed_memory": ("convlens._alloc", "keep_freed_memory"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'convlens' has no attribute {name!r}")
    module_name, attr = _EXPORTS[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
