"""Shortcuts proven by intervention: the maps propose regions, masking them decides.

The shape of mean heatmaps is a hypothesis, not a verdict: a model that learned a corner patch
looks at that corner for every class (the patch's presence is one class's evidence, its
absence the other's), and a clean model's cluster can peak in a corner that holds nothing.  So:

1. **Candidates** (:mod:`.proposals`: :func:`plan`, :func:`candidates`): the blobs (connected
   regions at half the maximum, :func:`blobs`; the first is :func:`~convlens.audit.spray.spot`) of
   each cluster's and each class's mean map and of the mean of all classes' (spots shared across
   classes), and where a class's pixels stand out from the others' (:func:`distinct`), as boxes in
   fractions of the input; blobs larger than ``MAX_AREA`` of the input are no region.  Each
   candidate is tested for the class it came from (a shared spot for every class); every class
   also gets the global statistics (``STATISTICS``: brightness, contrast, border colour, the mean
   of each colour channel).  Per sampled image of the candidate's class, its object: the box of the
   main blob of its own map outside the candidate (:func:`object_box`).
2. **Interventions** (:mod:`.masking`: :func:`measure`, batched forwards without gradients, the
   same function on both engines): on a seeded sample of each class's images (``PER_CLASS``, at
   most ``TOTAL`` in all) the box is replaced (:func:`replaced`, the audit's ``replace``: the data's
   mean colour, a strong Gaussian blur, or ROAD's inpainting); the same replacement of the same box
   at ``CONTROLS`` random places on the class's images is the control, and of each image's object
   the second control (neither run for a region whose masking changes next to nothing,
   ``NO_EFFECT``: it cannot be a finding).  A statistic is normalised per image (brightness: the
   image scaled so that its mean is the sample's; contrast: its spread around its mean scaled; a
   channel's mean scaled; the border band shifted), and the control is the same change in the
   opposite direction (the inverse factor, the opposite shift): the same size of change, which a
   model that learned "darker means A" does not mind.  Rows go to ``interventions.parquet``
   (:mod:`.records`: :func:`schema`, the same from both engines; the plan to ``interventions.json``).
3. **Verdicts** (:mod:`.significance` and :mod:`.findings`: :func:`verdicts`, a pure function of the
   table and the plan): per image the flip (its prediction was the class and is not after) and the
   drop in the class's probability, minus the control's mean over its places (paired); a seeded
   bootstrap over images gives the 95% interval of the mean difference.  A candidate is significant
   when the flip rate exceeds the control's by at least ``MIN_EFFECT`` with the interval above 0, or
   the probability drop's interval is above ``MIN_DROP``.  A region is a finding when it is
   significant and holds an artifact: at least ``HOLDERS`` of the class's images hold the same pixels
   in a good part of it (``SHARED`` of its cells within ``CONSTANT`` of the most common pattern,
   :func:`holders`: a patch, a watermark, a border on some or all of them; the effect is then
   measured on those images), since a region whose pixels vary is the object itself, which a model
   should use.  The object control is reported beside it (``object_effect``: "masking the corner
   flips 100%; masking the object 12%"), not part of the test.  Overlapping findings of a class are
   one (:func:`merge`).  A global statistic is reported as a property of the data the model uses
   (with how much it differs between the classes, the standardised difference ``d``, at least 0.5
   for a finding), never as a region.

Every public name of the modules is importable from here.
"""

from __future__ import annotations

from .findings import REPLACED, Verdict, class_name, flipped_to, merge, object_numbers, verdicts
from .masking import (
    BATCH,
    BLUR,
    BORDER_BAND,
    CONTENT,
    INPAINT_NOISE,
    NO_EFFECT,
    blurred,
    measure,
    pooled,
    replaced,
    seed_of,
)
from .proposals import (
    BLOBS,
    CONTROLS,
    CORNERS,
    DENSE,
    DISTINCT,
    MAX_AREA,
    MAX_CANDIDATES,
    MIN_PER_CLASS,
    PER_CLASS,
    SAME_BOX,
    STATISTICS,
    TOTAL,
    Candidate,
    area,
    blobs,
    box_of,
    candidates,
    density,
    distinct,
    iou,
    object_box,
    pixel_box,
    plan,
    sample,
)
from .records import PLAN, TABLE, Subject, all_tests, concat, decode, read, schema, subjects, write_plan, write_table
from .significance import (
    AFFECTED,
    BOOTSTRAP,
    CONFIDENCE,
    CONSTANT,
    HOLDERS,
    MIN_DROP,
    MIN_EFFECT,
    SHARED,
    accuracy,
    bootstrap,
    columns,
    effect_numbers,
    holders,
    paired,
    rounded,
)

__all__ = [
    "AFFECTED", "BATCH", "BLOBS", "BLUR", "BOOTSTRAP", "BORDER_BAND", "CONFIDENCE", "CONSTANT", "CONTENT", "CONTROLS",
    "CORNERS", "DENSE", "DISTINCT", "HOLDERS", "INPAINT_NOISE", "MAX_AREA", "MAX_CANDIDATES", "MIN_DROP",
    "MIN_EFFECT", "MIN_PER_CLASS", "NO_EFFECT", "PER_CLASS", "PLAN", "REPLACED", "SAME_BOX", "SHARED", "STATISTICS",
    "TABLE", "TOTAL", "Candidate", "Subject", "Verdict", "accuracy", "all_tests", "area", "blobs", "blurred",
    "bootstrap", "box_of", "candidates", "class_name", "columns", "concat", "decode", "density", "distinct",
    "effect_numbers", "flipped_to", "holders", "iou", "measure", "merge", "object_box", "object_numbers", "paired",
    "pixel_box", "plan", "pooled", "read", "replaced", "rounded", "sample", "schema", "seed_of", "subjects",
    "verdicts", "write_plan", "write_table",
]
