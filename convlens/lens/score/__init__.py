"""Can I trust this heatmap? ``score``: faithfulness and localisation metrics per method, with baselines.

``score(model, images, method, metric, target, layer, boxes)`` explains the images once (all methods
from one :func:`~convlens.lens.cam.explain`), adds two trivial maps scored as if they were methods,
and runs every metric on every image x target x method, batched over all of them at once
(:mod:`convlens.lens.faithfulness`). The result is a :class:`Scores` (a :class:`~convlens.view.View`).

Baselines (methods named so in every table):

- ``random``: uniform noise in [0, 1], **smoothed**: one value per 32 x 32 block of the input (a
  CAM's resolution) bilinearly upsampled, seeded by ``seed`` (see :func:`random_maps`);
- ``centre``: a Gaussian centred on the input grid, standard deviation a quarter of its shorter side.

Metrics (``metric="deletion,insertion,..."``; the protocols in :mod:`convlens.lens.faithfulness`):

- ``deletion`` / ``insertion``: RISE AUC of the target's softmax probability, ``steps`` intervals,
  deleted pixels set to 0 in the normalised space (the dataset mean), insertion from a Gaussian
  blur (sigma 10 px) as RISE does; lower deletion and higher insertion are better;
- ``avgdrop`` / ``increase``: Average Drop % and Increase in Confidence % (Grad-CAM++), the input
  multiplied by its map; lower drop, higher increase are better;
- ``road-morf`` / ``road-lerf``: ROAD, mean over the removed fractions 0.1, 0.3, 0.5, 0.7, 0.9 of
  p_imputed - p (noisy linear imputation); ``fraction`` is the share REMOVED in both orders (see
  faithfulness.py for pytorch-grad-cam's opposite convention); MoRF lower, LeRF higher is better;
  ``road``: the combined mean((LeRF - MoRF) / 2) over the same fractions, higher is better;
- ``pointing``: 1 if the map's peak lies inside a box of the target (within ``tolerance`` pixels of
  the original picture, as TorchRay's pointing game), else 0; ``energy``: the share of the map's
  mass inside the boxes (energy-based pointing game, Score-CAM). Both need ``boxes``: boxes or mask
  images in original-image pixels, in a dict, a JSON or CSV file or a folder of masks (the formats
  and how they are matched to the images: :mod:`convlens.lens.score.regions`).

The package holds the metrics and baselines (``metrics``), the regions (``regions``), the result
(``result``) and the verb (``verb``); every name is importable from ``convlens.lens.score``.
"""

from __future__ import annotations

from . import metrics
from .metrics import (
    BASELINES,
    HIGHER_BETTER,
    METRICS,
    NEEDS_BOXES,
    ROAD_FRACTIONS,
    centre_map,
    parse_metrics,
    random_maps,
    split_methods,
)
from .regions import Boxes, RegionMask, box_distance, box_mask, load_boxes, match_boxes, pointing_energy, read_mask
from .result import Scores, bootstrap
from .verb import check_settings, score

_ALIASES = metrics.ALIASES  # the other spellings of metrics and baselines, under the name older code reads

__all__ = [
    "BASELINES", "Boxes", "HIGHER_BETTER", "METRICS", "NEEDS_BOXES", "ROAD_FRACTIONS", "RegionMask", "Scores",
    "bootstrap", "box_distance", "box_mask", "centre_map", "check_settings", "load_boxes", "match_boxes",
    "parse_metrics", "pointing_energy", "random_maps", "read_mask", "score", "split_methods",
]
