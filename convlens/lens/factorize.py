"""Deep Feature Factorization (Collins et al. 2018): the concepts a layer finds across images.

``factorize(model, images, k)`` runs the images to a layer (default: the automatic CAM layer),
factorises its activations with non-negative matrix factorisation -- channels x (images x
pixels) ~ concepts (C x k) x heatmaps (k x images x pixels) -- and scores each concept's
channel vector with the model's classifier head, as pytorch-grad-cam's
``DeepFeatureFactorization`` does (scikit-learn's NMF, random init, seed 0; each channel
shifted to a minimum of 0 first and the shift added back to the concepts).  The result is a
:class:`Factorization` view: per concept its heatmap on every image (min-max scaled, on the
model's input grid) and the classes it scores for.

The head must take the layer's channels (a ``Linear`` with ``C`` inputs after global pooling,
as ResNets and EfficientNets have after their last feature layer); any other layer is refused
in one line.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import LayerError, SpecError
from ..models.lensmodel import ClassScore
from ..probe import Probe
from ..render.files import OutDir, Saved, unique_stems
from ..render.grid import grid
from ..render.overlay import overlay, to_rgb
from ..view import View
from .cam.layers import as_lens, check_layers, default_layer
from .cam.verb import prepare


def nmf(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``A`` (N, C, h, w) -> concepts (C, k) and heatmaps (N, k, h, w), pytorch-grad-cam's ``dff``."""
    from sklearn.decomposition import NMF  # ~1 s to import: only when factorising

    N, C, h, w = A.shape
    M = np.nan_to_num(A.transpose(1, 0, 2, 3).reshape(C, -1).astype(np.float64))
    offset = M.min(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NMF's ConvergenceWarning at its default 200 iterations
        model = NMF(n_components=k, init="random", random_state=0)
        W = model.fit_transform(M - offset[:, None])
    H = model.components_
    return W + offset[:, None], H.reshape(k, N, h, w).transpose(1, 0, 2, 3)


def classifier_for(module: nn.Module, channels: int) -> nn.Linear:
    """The classifier head that takes ``channels`` features (timm's ``get_classifier()``, else the
    last ``nn.Linear`` with that many inputs)."""
    getter = getattr(module, "get_classifier", None)
    head = getter() if callable(getter) else None
    if isinstance(head, nn.Linear) and head.in_features == channels:
        return head
    linears = [m for m in module.modules() if isinstance(m, nn.Linear) and m.in_features == channels]
    if not linears:
        raise LayerError(f"no classifier of the model takes {channels} features, so the concepts of this "
                         "layer cannot be scored; use the layer before global pooling (the default)", param="layer")
    return linears[-1]


@dataclass(eq=False)
class Factorization(View):
    """Concepts of one layer over some images: ``heatmaps`` ``(N, k, H, W)`` in [0, 1] on the
    model's input grid, ``concepts`` ``(C, k)`` channel vectors, ``classes[j]``: the top classes
    concept ``j`` scores for (softmax of the head on its vector)."""

    layer: str
    concepts: torch.Tensor
    heatmaps: torch.Tensor
    classes: list[list[ClassScore]]
    images: list[str]
    pictures: torch.Tensor  # (N, C, H, W) the model's inputs, to draw
    config: Any
    model_name: str = "model"

    def __len__(self) -> int:
        return self.heatmaps.shape[0]

    @property
    def k(self) -> int:
        return self.heatmaps.shape[1]

    def __repr__(self) -> str:
        return f"Factorization(layer={self.layer!r}, concepts={self.k}, images={len(self)})"

    def concept_label(self, j: int) -> str:
        top = self.classes[j][0]
        return f"#{j} {top.label.split(',')[0]} {top.probability:.0%}"

    def figure(self, image: int | None = None, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
        """Images (rows; one when ``image`` is given) x concepts (columns), each concept's
        heatmap over the picture, titled with the class it scores highest."""
        rows_idx = range(len(self)) if image is None else [int(image)]
        rows = []
        for i in rows_idx:
            pic = to_rgb(self.pictures[i], self.config)
            rows.append([pic] + [overlay(pic, self.heatmaps[i, j].cpu().numpy(), cmap=cmap, alpha=alpha)
                                 for j in range(self.k)])
        titles = ["picture"] + [self.concept_label(j) for j in range(self.k)]
        return grid(rows, row_titles=[os.path.basename(str(self.images[i])) for i in rows_idx], col_titles=titles,
                    cell=160, title=f"{self.model_name}: {self.k} concepts of layer {self.layer}",
                    subtitle="each concept's heatmap over the picture; its title: the class it scores highest")

    def to_dict(self) -> dict[str, Any]:
        """Layer, and per concept its top classes and its share of each image's heatmap mass."""
        mass = self.heatmaps.float().sum((-2, -1))
        share = (mass / mass.sum(1, keepdim=True).clamp(min=1e-12)).cpu().tolist()
        return {"layer": self.layer, "model": self.model_name, "k": self.k, "images": list(self.images),
                "grid": list(self.heatmaps.shape[-2:]),
                "concepts": [{"concept": j, "classes": [c.to_dict() for c in self.classes[j]],
                              "share": [row[j] for row in share]} for j in range(self.k)]}

    def save(self, out_dir: str | os.PathLike, cmap: str = "jet", alpha: float = 0.5) -> Saved:
        """Write ``<image>/concepts.npy`` (k x H x W float32, role ``heatmap``), ``<image>/concepts.png``
        (the figure of that image, role ``figure``) and ``concepts.npy`` (C x k, role ``concepts``)."""
        out = OutDir(out_dir)
        out.npy("concepts", "concepts.npy", self.concepts.cpu().numpy().astype(np.float32))
        for i, stem in enumerate(unique_stems(self.images)):
            out.npy("heatmap", f"{stem}/concepts.npy", self.heatmaps[i].cpu().numpy().astype(np.float32))
            out.png("figure", f"{stem}/concepts.png", self.figure(i, cmap=cmap, alpha=alpha))
        out.record(**self.to_dict())
        return out.saved()


def factorize(model: Any, images: Any, k: int = 4, layer: str | None = None, *, top: int = 3) -> Factorization:
    """Deep Feature Factorization of ``images`` at ``layer`` into ``k`` concepts (see the module doc)."""
    lm = as_lens(model)
    if int(k) < 1:
        raise SpecError(f"k must be at least 1 (got {k})", param="k")
    name = default_layer(lm) if layer is None else check_layers(lm, [layer])[0]
    inputs = prepare(lm, images)
    x = inputs.batch
    with torch.inference_mode(), Probe(lm.module, [name]) as probe:
        was = lm.module.training
        try:
            lm.module.eval()
            lm.module(x)
        finally:
            lm.module.train(was)
    A = probe.activations[name]
    if A.ndim != 4:
        raise LayerError(f"layer {name!r} output has shape {tuple(A.shape[1:])}, not a feature map", param="layer")
    N, C, h, w = A.shape
    if int(k) > C:
        raise SpecError(f"k must be at most the layer's {C} channels (got {k})", param="k")
    concepts, maps = nmf(A.float().cpu().numpy(), int(k))
    head = classifier_for(lm.module, C)
    with torch.inference_mode():
        probs = head(torch.from_numpy(concepts.T.astype(np.float32)).to(head.weight)).float().softmax(-1).cpu()
    names = lm.class_names
    classes = []
    for row in probs:
        p, idx = row.topk(min(top, row.numel()))
        classes.append([ClassScore(int(c), names[c] if c < len(names) else f"class {c}", float(v))
                        for v, c in zip(p.tolist(), idx.tolist())])
    m = torch.from_numpy(maps.astype(np.float32))
    lo = m.amin(dim=(-2, -1), keepdim=True)
    m = (m - lo) / (m.amax(dim=(-2, -1), keepdim=True) - lo + 1e-7)
    heat = F.interpolate(m, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return Factorization(layer=name, concepts=torch.from_numpy(concepts).float(), heatmaps=heat.clamp(0, 1),
                         classes=classes, images=list(inputs.names), pictures=x.detach().cpu(), config=lm.config,
                         model_name=lm.name)


__all__: Sequence[str] = ["Factorization", "factorize", "nmf"]
