"""Audit a model over a whole data set (a flow): where it looks class by class, the strategies it
uses (SpRAy: spectral clustering of the heatmaps) and the shortcuts it may have learned.

``audit(model, data)`` explains every image (streaming: decoding, the model and writing
overlap; memory bounded whatever the data set's size), writes one row per image to Parquet
shards under ``out`` (resumable: an interrupted audit picks up from its written shards), then
reads them back class by class into an :class:`Audit` view: ``to_dict()`` (the ``--json``
shape), ``figure()``, ``save()`` (``summary.json``, ``overview.png``, the self-contained
``index.html``).  ``engine="ray"`` runs the same per-shard work on Ray Data actors.

The package: ``inputs`` (DATA to items), ``maps`` (numbers on heatmaps), ``shards`` (the
directory, schema, manifest), ``engine`` (the local pipeline), ``ray_engine``, ``spray``
(clusters and the maps' shortcut hypotheses), ``interventions`` (the hypotheses and the global
statistics tested by masking against random regions and each image's object: the findings; a
package of proposals, masking, records, significance, findings), ``evidence`` (what the page shows
of a finding), ``result`` (:class:`Audit`), ``verb`` (:func:`audit`).

Names are imported lazily (as in ``convlens``), for start-up time: a Ray worker imports
``convlens.audit.ray_engine``, hence this package, and needs neither the summary (``result``:
matplotlib) nor SpRAy (``spray``: scipy, scikit-learn).
"""

from __future__ import annotations

import importlib
from typing import Any

from .._modules import make_callable

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "AuditData": "inputs", "Item": "inputs", "resolve": "inputs",
    "AUDIT_CSS": "result", "Audit": "result", "ClassAudit": "result", "load_audit": "result", "summarise": "result",
    "read_shards": "shards", "schema": "shards",
    "Cluster": "spray", "cluster_maps": "spray", "strategies": "spray",
    "AuditWarning": "verb", "audit": "verb",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _audit(*args: Any, **kwargs: Any) -> Any:
    return __getattr__("audit")(*args, **kwargs)


_audit.__name__ = "audit"
make_callable(__name__, _audit)  # ``convlens.audit(...)`` stays the verb after ``import convlens.audit``
