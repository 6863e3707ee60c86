"""Server-side state of the explorer: one :class:`Explorer` holding its stores
(:mod:`convlens.web.stores`), its work queue (:mod:`convlens.web.workqueue`) and its result caches.

The names of those two modules are re-exported here, where the routes and tests import them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from .stores import (
    LRU,
    MAX_SIDE,
    SAMPLES,
    ImageStore,
    ModelStore,
    NotFound,
    RunStore,
    StoredImage,
    Unreadable,
    model_id,
)
from .workqueue import Busy, WorkQueue

__all__ = ["MAX_SIDE", "SAMPLES", "LRU", "Busy", "Explorer", "ImageStore", "ModelStore", "NotFound", "RunStore",
           "StoredImage", "Unreadable", "WorkQueue", "explorer", "model_id"]


@dataclass
class Explorer:
    """Everything one explorer app holds: its stores, its work queue and its result caches.

    The routes reach it through :func:`explorer` (a FastAPI dependency).
    """

    models: ModelStore
    images: ImageStore
    runs: RunStore | None
    queue: WorkQueue
    max_upload: int
    #: (model id, image id) -> the Journey of that image
    journeys: LRU = field(default_factory=lambda: LRU(8))
    #: answered CAM and top-loss payloads, by their request
    cams: LRU = field(default_factory=lambda: LRU(64))
    #: (model id, image id) -> the default Grad-CAM Explanation of that image, from its predict pass
    fresh_cams: LRU = field(default_factory=lambda: LRU(256))

    def need_runs(self) -> RunStore:
        """The runs folder, or a 404 naming the option that serves one."""
        if self.runs is None:
            raise NotFound("no runs folder is served (start the server with --runs DIR)")
        return self.runs


def explorer(request: Request) -> Explorer:
    """FastAPI dependency: the :class:`Explorer` of the app serving ``request``."""
    return request.app.state.explorer
