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
(clusters and the shortcut test), ``result`` (:class:`Audit`), ``verb`` (:func:`audit`).
"""

from .inputs import AuditData, Item, resolve
from .result import AUDIT_CSS, Audit, ClassAudit, load_audit, summarise
from .shards import read_shards, schema
from .spray import Cluster, cluster_maps, strategies
from .verb import AuditWarning, audit
from .._modules import make_callable

__all__ = ["AUDIT_CSS", "Audit", "AuditData", "AuditWarning", "ClassAudit", "Cluster", "Item", "audit", "cluster_maps",
           "load_audit", "read_shards", "resolve", "schema", "strategies", "summarise"]

make_callable(__name__, audit)  # ``convlens.audit(...)`` stays the verb after ``import convlens.audit``
