"""What score a map explains: a class logit (the default) and the other targets.

A target names the scalar per image whose gradient (or change) the methods follow:

==========================  =====================================  ==============================
Python                      string (CLI ``--target``)              score of image i
==========================  =====================================  ==============================
``281``, ``"tabby cat"``    ``281``, ``"tabby cat"``, ``top3``     logit ``z[k]``
``Softmax("tabby cat")``    ``softmax:tabby cat``                  ``softmax(z)[k]``
``Sigmoid()``               ``sigmoid`` (``sigmoid:0``: negative)  ``+z`` (``-z``) of a one-logit model
``Versus("cat", "dog")``    ``cat vs dog``                         ``z[a] - z[b]``
``RawOutput()``             ``raw``                                sum of the model's outputs
``Segmentation("cat")``     ``seg:cat``                            ``sum over mask of z[k, y, x]``
``Embedding(ref)``          ``similar:ref.jpg``                    ``cos(output, embedding of ref)``
==========================  =====================================  ==============================

They match pytorch-grad-cam's ``ClassifierOutputTarget``, ``ClassifierOutputSoftmaxTarget``,
``BinaryClassifierOutputTarget``, ``RawScoresOutputTarget``, ``SemanticSegmentationTarget`` and
``SimilarityToConceptTarget``.  :class:`Columns` is a request resolved on one batch: the
class shown per image and target, and the scores of any output of the same model.

>>> import torch
>>> cols = Columns([Column("versus", torch.tensor([0]), other=torch.tensor([1]), label="a vs b")])
>>> cols.score(torch.tensor([[3.0, 1.0]]), None)
tensor([[2.]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import TargetError


@dataclass(frozen=True)
class Softmax:
    """The softmax probability of a class (index or label)."""

    cls: int | str | None = None


@dataclass(frozen=True)
class Sigmoid:
    """The single logit of a binary model (output ``(N, 1)``): ``+z`` for the positive class,
    ``-z`` for the negative one (``positive=False``)."""

    positive: bool = True


@dataclass(frozen=True)
class Versus:
    """Class ``a`` against class ``b``: the logit difference ``z[a] - z[b]``."""

    a: int | str
    b: int | str


@dataclass(frozen=True)
class RawOutput:
    """The model's raw outputs, summed (one number for a regression model)."""


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A segmentation model's class over a mask: ``sum_{(y,x) in mask} out[k, y, x]``.

    ``mask``: a boolean ``(H, W)`` array on the model's output grid (the same for every image),
    or None for each image's pixels predicted as ``cls`` (pytorch-grad-cam's tutorial mask)."""

    cls: int | str | None = None
    mask: Any = None


@dataclass(frozen=True, eq=False)
class Embedding:
    """Similarity to a reference embedding, for feature extractors (outputs ``(N, D)``): the
    cosine of each image's output with ``reference`` -- a vector ``(D,)``, or an image (path,
    PIL, array) the model embeds first.  For "why do these two images match"."""

    reference: Any
    label: str = "similarity to the reference"


TARGET_TYPES = (Softmax, Sigmoid, Versus, RawOutput, Segmentation, Embedding)


@dataclass
class Column:
    """One resolved target for the images of one batch."""

    kind: str  # class, softmax, sigmoid, versus, raw, segmentation, embedding
    index: torch.Tensor  # (N,) the class shown (0 where the target has none)
    label: str | None = None  # fixed label (None: the class name of ``index``)
    other: torch.Tensor | None = None  # versus: (N,) class b
    sign: float = 1.0  # sigmoid: +1 positive, -1 negative
    mask: torch.Tensor | None = None  # segmentation: (N, H, W) float
    vector: torch.Tensor | None = None  # embedding: (D,)
    shape: tuple[int, ...] = field(default_factory=tuple)  # segmentation: the output's (K, H, W)

    def score(self, out: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """The score ``(n,)`` of the images ``rows`` (None: all) from their outputs ``out``."""
        idx = self.index if rows is None else self.index[rows]
        if self.kind == "class":
            return out.gather(1, idx[:, None])[:, 0]
        if self.kind == "softmax":
            return out.softmax(-1).gather(1, idx[:, None])[:, 0]
        if self.kind == "versus":
            other = self.other if rows is None else self.other[rows]
            return out.gather(1, idx[:, None])[:, 0] - out.gather(1, other[:, None])[:, 0]
        if self.kind == "sigmoid":
            return self.sign * out.reshape(out.shape[0], -1).sum(1)
        if self.kind == "raw":
            return out.reshape(out.shape[0], -1).sum(1)
        if self.kind == "segmentation":
            maps = out.reshape(out.shape[0], *self.shape)
            mask = self.mask if rows is None else self.mask[rows]
            return (maps.gather(1, idx[:, None, None, None].expand(-1, 1, *self.shape[1:]))[:, 0]
                    * mask.to(maps.dtype)).sum((-2, -1))
        if self.kind == "embedding":
            return F.cosine_similarity(out.reshape(out.shape[0], -1), self.vector.to(out)[None], dim=1)
        raise TargetError(f"unknown target kind {self.kind!r}", param="target")  # pragma: no cover

    def probability(self, out: torch.Tensor) -> torch.Tensor:
        """What the result shows as the target's probability ``(N,)``: the softmax probability of
        the class; for ``sigmoid`` the class's sigmoid; for ``versus`` P(a | a or b); for a
        segmentation the class's mean probability over the mask; NaN where there is none (raw
        outputs; an embedding shows its cosine similarity in the label)."""
        out = out.float()
        if self.kind in ("class", "softmax"):
            return out.softmax(-1).gather(1, self.index[:, None])[:, 0]
        if self.kind == "versus":
            return torch.sigmoid(self.score(out, None))
        if self.kind == "sigmoid":
            return torch.sigmoid(self.score(out, None))
        if self.kind == "segmentation":
            probs = out.reshape(out.shape[0], *self.shape).softmax(1)
            p = probs.gather(1, self.index[:, None, None, None].expand(-1, 1, *self.shape[1:]))[:, 0]
            m = self.mask.to(p.dtype)
            return (p * m).sum((-2, -1)) / m.sum((-2, -1)).clamp(min=1)
        return torch.full((out.shape[0],), float("nan"), device=out.device)

    def same_as(self, other: "Column") -> bool:
        """Whether two columns ask for the same score of every image (a repeat costs nothing)."""
        return self.kind == other.kind == "class" and torch.equal(self.index, other.index)


@dataclass
class Columns:
    """Every target column of one batch: ``score(out, rows)`` -> ``(n, T)``."""

    cols: list[Column]

    def __len__(self) -> int:
        return len(self.cols)

    @property
    def indices(self) -> torch.Tensor:
        """``(N, T)``: the class shown per image and target."""
        return torch.stack([c.index for c in self.cols], dim=1)

    @property
    def classes_only(self) -> bool:
        return all(c.kind == "class" for c in self.cols)

    def score(self, out: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        return torch.stack([c.score(out, rows) for c in self.cols], dim=1)

    def select(self, keep: Sequence[int]) -> "Columns":
        return Columns([self.cols[k] for k in keep])

    def rows(self, start: int, stop: int) -> "Columns":
        """The columns of images ``start:stop``."""
        out = []
        for c in self.cols:
            out.append(Column(c.kind, c.index[start:stop], c.label, None if c.other is None else c.other[start:stop],
                              c.sign, None if c.mask is None else c.mask[start:stop], c.vector, c.shape))
        return Columns(out)


def as_mask(mask: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """A user's segmentation mask as a float ``(H, W)`` tensor on the output grid ``shape[-2:]``."""
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.ndim != 2 or tuple(m.shape) != tuple(shape[-2:]):
        raise TargetError(f"the segmentation mask must be {shape[-2]}x{shape[-1]} (the model's output grid; "
                          f"got {'x'.join(map(str, m.shape))})", param="target")
    return m.float()
