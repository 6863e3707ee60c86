"""Shortcuts proven by intervention: the maps propose regions, masking them decides.

The shape of mean heatmaps is a hypothesis, not a verdict: a model that learned a corner patch
looks at that corner for every class (the patch's presence is one class's evidence, its
absence the other's), and a clean model's cluster can peak in a corner that holds nothing.  So:

1. **Candidates** (:func:`plan`, :func:`candidates`): the blobs (connected regions at half the
   maximum, :func:`blobs`; the first is :func:`~convlens.audit.spray.spot`) of each cluster's and
   each class's mean map and of the mean of all classes' (spots shared across classes), as boxes
   in fractions of the input; blobs larger than ``MAX_AREA`` of the input are no region.  Each
   candidate is tested for the class it came from (a shared spot for every class); every class also
   gets the global statistics (``STATISTICS``: brightness, contrast, border colour, the mean of each colour channel).
2. **Interventions** (:func:`measure`, batched forwards without gradients, the same function on
   both engines): on a seeded sample of each class's images (``PER_CLASS``, at most ``TOTAL`` in
   all) the box is filled with the data's mean colour (the sample's per-channel mean); the same
   box at ``CONTROLS`` random places on the class's images is the control (not run for a region whose
   masking changes next to nothing, ``NO_EFFECT``: it cannot be a finding).  A statistic is
   normalised per image (brightness: the image scaled so that its mean is the sample's; contrast:
   its spread around its mean scaled; a channel's mean scaled; the border band shifted), and the
   control is the same change in the opposite direction (the inverse factor, the opposite shift):
   the same size of change, which a model that learned "darker means A" does not mind.
   Rows go to ``interventions.parquet`` (:func:`schema`, the same from both engines).
3. **Verdicts** (:func:`verdicts`, a pure function of the table and the plan): per image the
   flip (its prediction was the class and is not after) and the drop in the class's probability,
   minus the control's mean over its places (paired); a seeded bootstrap over images gives the 95%
   interval of the mean difference.  A candidate is significant when the flip rate exceeds the
   control's by at least ``MIN_EFFECT`` with the interval above 0, or the probability drop's
   interval is above ``MIN_DROP``.  A region is a finding when it is significant and holds an
   artifact: at least ``HOLDERS`` of the class's images hold the same pixels in a good part of it
   (``SHARED`` of its cells within ``CONSTANT`` of the most common pattern, :func:`holders`: a patch,
   a watermark, a border on some or all of them; the effect is then measured on those images), since a region whose
   pixels vary is the object itself, which a model should use.  Overlapping findings of a class
   are one (:func:`merge`).  A global statistic is reported as a property of the data the model
   uses (with how much it differs between the classes, the standardised difference ``d``, at
   least 0.5 for a finding), never as a region.
"""

from __future__ import annotations

from .findings import Verdict, class_name, flipped_to, merge, verdicts
from .masking import BATCH, BORDER_BAND, CONTENT, NO_EFFECT, measure, pooled
from .proposals import (BLOBS, CONTROLS, CORNERS, DENSE, DISTINCT, MAX_AREA, MAX_CANDIDATES, MIN_PER_CLASS, PER_CLASS,
                        SAME_BOX, STATISTICS, TOTAL, Candidate, area, blobs, box_of, candidates, density, distinct, iou,
                        pixel_box, plan, sample)
from .records import PLAN, TABLE, Subject, all_tests, concat, decode, read, schema, subjects, write_plan, write_table
from .significance import (AFFECTED, BOOTSTRAP, CONFIDENCE, CONSTANT, HOLDERS, MIN_DROP, MIN_EFFECT, SHARED, accuracy,
                           bootstrap, columns, effect_numbers, holders, paired, rounded)

__all__ = [
    "AFFECTED", "BATCH", "BLOBS", "BOOTSTRAP", "BORDER_BAND", "CONFIDENCE", "CONSTANT", "CONTENT", "CONTROLS",
    "CORNERS", "DENSE", "DISTINCT", "HOLDERS", "MAX_AREA", "MAX_CANDIDATES", "MIN_DROP", "MIN_EFFECT",
    "MIN_PER_CLASS", "NO_EFFECT", "PER_CLASS", "PLAN", "SAME_BOX", "SHARED", "STATISTICS", "TABLE", "TOTAL",
    "Candidate", "Subject", "Verdict", "accuracy", "all_tests", "area", "blobs", "bootstrap", "box_of", "candidates",
    "class_name", "columns", "concat", "decode", "density", "distinct", "effect_numbers", "flipped_to", "holders",
    "iou", "measure", "merge", "paired", "pixel_box", "plan", "pooled", "read", "rounded", "sample", "schema",
    "subjects", "verdicts", "write_plan", "write_table",
]
