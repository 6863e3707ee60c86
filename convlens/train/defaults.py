"""The defaults that depend on the data: augmentation for small training splits.

``convlens train`` without ``--augment`` (``augment="auto"`` in :func:`~convlens.train.train`)
augments the training split with :data:`SMALL_DATA_AUGMENT` when a CNN is trained from scratch
(an ``--arch`` spec) on fewer than :data:`SMALL_SPLIT` training images, and not otherwise:

* small splits are where a from-scratch CNN overfits, and where its validation split (a tenth of
  the data: 62 images on the CMU faces) is too noisy to pick a good epoch: without augmentation the
  faces' eyes model stopped early on an epoch that scored 0.976-0.984; with it, 0.992-1.000 over
  three seeds (bench/RESULTS.md);
* no flips: digits and text must not be mirrored (``flip=h`` stays the caller's choice);
* not for a pretrained backbone: a frozen one computes its features once, and augmentation would
  make it run the backbone on every batch of every epoch;
* not for larger splits (``digits`` 1,258, DeFungi 1,121, MNIST 7,000 training images): they
  train as before, to the same weights.

>>> default_augment(437, "spec")
'rotate=10,translate=0.08,zoom=0.08'
>>> default_augment(1258, "spec"), default_augment(437, "transfer")
('', '')
"""

from __future__ import annotations

#: the default augmentation of a small training split: +-10 degrees, +-8 % shift, 0.92-1.08 zoom
SMALL_DATA_AUGMENT = "rotate=10,translate=0.08,zoom=0.08"
#: a training split below this many images is small
SMALL_SPLIT = 1000
#: the value of ``augment`` (``--augment``) that asks for the rule above
AUTO = "auto"


def is_auto(augment: object) -> bool:
    """Whether ``augment`` asks for the data-dependent default."""
    return isinstance(augment, str) and augment.strip().lower() == AUTO


def default_augment(n_train: int, kind: str) -> str:
    """The augmentation spec ``auto`` stands for: :data:`SMALL_DATA_AUGMENT` for a CNN trained from
    scratch (``kind`` ``"spec"``) on fewer than :data:`SMALL_SPLIT` training images, else ``""``."""
    return SMALL_DATA_AUGMENT if kind == "spec" and n_train < SMALL_SPLIT else ""


def describe(n_train: int, kind: str) -> str:
    """One line saying what ``auto`` chose and why (printed when training starts), or ``""`` when it
    chose no augmentation (the run trains as it always did)."""
    spec = default_augment(n_train, kind)
    if not spec:
        return ""
    return (f"augment: {spec} (the default for a CNN trained from scratch on under {SMALL_SPLIT:,} training "
            f"images; this split has {n_train:,}; --augment none turns it off)")
