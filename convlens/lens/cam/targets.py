"""What to explain: method names and target classes, parsed and resolved."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ...errors import SpecError, TargetError, closest
from ...models.labels import resolve_label
from ...render.files import safe_stem
from ..attribution import PIXEL_METHODS
from .formulas import CAM_METHODS

METHODS = CAM_METHODS + PIXEL_METHODS
ALIASES = {
    "grad-cam": "gradcam", "gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "grad-cam++": "gradcam++",
    "xgrad-cam": "xgradcam", "hires-cam": "hirescam", "layer-cam": "layercam", "eigen-cam": "eigencam",
    "eigen-grad-cam": "eigengradcam", "score-cam": "scorecam", "ablation-cam": "ablationcam",
    "integratedgradients": "ig", "integrated-gradients": "ig", "smooth-grad": "smoothgrad",
}


def method_slug(method: str) -> str:
    """A file-name-safe, distinct stem for a method: ``gradcam++`` -> ``gradcampp``."""
    return safe_stem(method.replace("+", "p"))


def parse_methods(method: str | Sequence[str]) -> list[str]:
    """``"gradcam,scorecam"`` or a list to validated method names (order kept, no repeats)."""
    items = method.split(",") if isinstance(method, str) else [m for part in method for m in str(part).split(",")]
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        name = ALIASES.get(name, name)
        if name not in METHODS:
            raise SpecError(f"unknown method {raw.strip()!r}{closest(name, METHODS)} "
                            f"(methods: {', '.join(METHODS)})", param="method")
        if name not in out:
            out.append(name)
    if not out:
        raise SpecError("no method given (methods: " + ", ".join(METHODS) + ")", param="method")
    return out


#: the spec item of per-image targets: ``(EACH, LongTensor (N, T))``, -1 for the predicted class
EACH = "each"


def per_image(target: Any) -> torch.Tensor | None:
    """A 2-D integer tensor or array ``(N, T)``: class indices per image, -1 for the predicted class."""
    if isinstance(target, np.ndarray):
        if target.ndim != 2:
            return None
        if target.dtype.kind not in "iu":
            raise TargetError(f"per-image targets must be class indices (got an array of {target.dtype})",
                              param="target")
        return torch.from_numpy(target.astype(np.int64))
    if isinstance(target, torch.Tensor) and target.ndim == 2:
        if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
            raise TargetError(f"per-image targets must be class indices (got a tensor of {target.dtype})",
                              param="target")
        return target.detach().to("cpu", torch.long)
    return None


def target_spec(target: Any, class_names: Sequence[str] = ()) -> list[Any]:
    """Normalise a target request to a list of items: int, label str, ('top', k), or
    (EACH, (N, T) indices) for per-image targets."""
    if target is None:
        return [("top", 1)]
    each = per_image(target)
    if each is not None:
        if each.shape[1] < 1:
            raise TargetError("per-image targets need at least one column", param="target")
        return [(EACH, each)]
    if isinstance(target, (torch.Tensor, np.ndarray)):
        if target.ndim == 0:
            target = target.item()
        else:  # 1-D: several classes for every image, as a list
            target = [int(v) for v in target.tolist()]
    if isinstance(target, (int, np.integer)):
        return [int(target)]
    if isinstance(target, str):
        parts = [p.strip() for p in target.split(",")] if "," in target and not _is_label(target, class_names) \
            else [target.strip()]
        out: list[Any] = []
        for p in parts:
            low = p.lower().replace(" ", "")
            if low.startswith("top") and low[3:].isdigit():
                k = int(low[3:])
                if k < 1:
                    raise TargetError(f"target {p!r}: top-k needs k >= 1", param="target")
                out.append(("top", k))
            elif low in ("top", "pred", "predicted"):
                out.append(("top", 1))
            elif p:
                out.append(p)
        return out or [("top", 1)]
    if isinstance(target, Iterable):
        out = []
        for t in target:
            out.extend(target_spec(t, class_names))
        if not out:
            raise TargetError("empty target list", param="target")
        return out
    raise TargetError(f"target must be a class index, a label, 'topK' or a list (got {type(target).__name__})",
                      param="target")


def _is_label(text: str, class_names: Sequence[str]) -> bool:
    """Whether a string with commas is itself a class name (ImageNet names have commas)."""
    low = " ".join(text.lower().split())
    return any(low == " ".join(n.lower().split()) for n in class_names)


def check_targets(spec: list[Any], class_names: list[str], images: int | None = None) -> None:
    """Fail early on a label or index the model does not have, or per-image targets whose rows
    are not one per image (``images``, when known)."""
    for item in spec:
        if isinstance(item, tuple) and item[0] == EACH:
            t = item[1]
            if images is not None and t.shape[0] != images:
                raise TargetError(f"per-image targets have {t.shape[0]} rows for {images} image(s)", param="target")
            if t.numel() and (int(t.min()) < -1 or int(t.max()) >= len(class_names)):
                raise TargetError(f"per-image targets must be class indices 0..{len(class_names) - 1} or -1 for "
                                  f"the predicted class (got {int(t.min())}..{int(t.max())})", param="target")
        elif not isinstance(item, tuple):
            resolve_label(item, class_names)


def batch_spec(spec: list[Any], start: int, stop: int) -> list[Any]:
    """The spec for images ``start:stop`` (per-image rows sliced; the rest is the same for all)."""
    return [(EACH, item[1][start:stop]) if isinstance(item, tuple) and item[0] == EACH else item for item in spec]


def resolve_targets(spec: list[Any], logits: torch.Tensor, class_names: list[str]) -> torch.Tensor:
    """``(N, T)`` class indices for the images whose ``logits`` are given."""
    N, K = logits.shape
    cols: list[torch.Tensor] = []
    top = None
    for item in spec:
        if isinstance(item, tuple) and item[0] == EACH:  # per image; -1: the predicted class
            t = item[1].to(logits.device)
            cols.extend(torch.where(t[:, j] >= 0, t[:, j], logits.topk(1, dim=1).indices[:, 0]) for j in range(t.shape[1]))
        elif isinstance(item, tuple):
            k = min(item[1], K)
            if top is None or top.shape[1] < k:
                top = logits.topk(k, dim=1).indices
            cols.extend(top[:, j] for j in range(k))
        else:
            names = class_names if len(class_names) == K else [f"class {i}" for i in range(K)]
            idx = resolve_label(item, names)
            cols.append(torch.full((N,), idx, dtype=torch.long, device=logits.device))
    return torch.stack(cols, dim=1)
