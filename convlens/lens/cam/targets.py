"""What to explain: method names and target classes, parsed and resolved."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ...errors import TargetError
from ...models.labels import resolve_label
from ...names import parse_names
from ...render.files import safe_stem
from .objectives import (
    TARGET_TYPES,
    Column,
    Columns,
    Embedding,
    RawOutput,
    Segmentation,
    Sigmoid,
    Softmax,
    Versus,
    as_mask,
)
from .registry import ALIASES as _REGISTERED_ALIASES
from .registry import METHODS as _REGISTERED

#: every method name (the registry's, in its order)
METHODS = tuple(_REGISTERED)
ALIASES = dict(_REGISTERED_ALIASES)


def method_slug(method: str) -> str:
    """A file-name-safe, distinct stem for a method: ``gradcam++`` -> ``gradcampp``."""
    return safe_stem(method.replace("+", "p"))


def parse_methods(method: str | Sequence[str]) -> list[str]:
    """``"gradcam,scorecam"`` or a list to validated method names (order kept, no repeats; the
    rules of :func:`convlens.names.parse_names`)."""
    return parse_names(method, METHODS, param="method", aliases=ALIASES)


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


def _class_or_label(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdigit() else text


def parse_target(text: str) -> Any:
    """One target string to a spec item: ``softmax:LABEL``, ``sigmoid`` / ``sigmoid:0``,
    ``A vs B``, ``raw``, ``seg:LABEL``, ``similar:IMAGE``; anything else stays a label (or index)."""
    low = text.strip().lower()
    head, _, rest = text.partition(":")
    key = head.strip().lower()
    if low == "raw":
        return RawOutput()
    if low == "softmax":
        return Softmax(None)
    if key == "softmax" and rest.strip():
        return Softmax(_class_or_label(rest))
    if low == "sigmoid" or key == "sigmoid":
        arg = rest.strip().lower()
        if arg in ("", "1", "positive", "pos"):
            return Sigmoid(True)
        if arg in ("0", "negative", "neg"):
            return Sigmoid(False)
        raise TargetError(f"target {text!r}: sigmoid takes 1/positive or 0/negative", param="target")
    if key in ("seg", "segmentation") and rest.strip():
        return Segmentation(_class_or_label(rest))
    if key in ("similar", "embedding") and rest.strip():
        return Embedding(rest.strip())
    parts = [p for p in text.split(" vs ")]
    if len(parts) == 2 and parts[0].strip() and parts[1].strip():
        return Versus(_class_or_label(parts[0]), _class_or_label(parts[1]))
    if " vs " in text:
        raise TargetError(f"target {text!r}: write one 'A vs B'", param="target")
    return text.strip()


def target_spec(target: Any, class_names: Sequence[str] = ()) -> list[Any]:
    """Normalise a target request to a list of items: int, label str, ('top', k),
    (EACH, (N, T) indices) for per-image targets, or a target object of
    :mod:`~convlens.lens.cam.objectives` (strings such as ``"softmax:cat"`` parsed to one)."""
    if target is None:
        return [("top", 1)]
    if isinstance(target, TARGET_TYPES):
        return [target]
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
            elif p and _is_label(p, class_names):
                out.append(p)
            elif p:
                out.append(parse_target(p))
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
        elif isinstance(item, (Softmax, Segmentation)):
            if item.cls is not None:
                resolve_label(item.cls, class_names)
        elif isinstance(item, Versus):
            resolve_label(item.a, class_names)
            resolve_label(item.b, class_names)
        elif isinstance(item, Embedding):
            if isinstance(item.reference, torch.Tensor) and item.reference.ndim != 1:
                raise TargetError(f"an embedding reference must be a vector (D,) or an image "
                                  f"(got a tensor of shape {tuple(item.reference.shape)})", param="target")
        elif isinstance(item, (Sigmoid, RawOutput)):
            pass
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
            cols.extend(torch.where(t[:, j] >= 0, t[:, j], logits.topk(1, dim=1).indices[:, 0])
                        for j in range(t.shape[1]))
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


def _name(names: list[str], k: int) -> str:
    return names[k].split(",")[0].strip() if 0 <= k < len(names) else f"class {k}"


def resolve_columns(spec: list[Any], out: torch.Tensor, class_names: list[str],
                    shape: tuple[int, ...] | None = None) -> Columns:
    """The target columns for the images whose model output ``out`` is given (``(N, K)``; for a
    segmentation model flattened from ``shape`` = ``(K, H, W)``)."""
    N = out.shape[0]
    dev = out.device
    cols: list[Column] = []
    plain = [item for item in spec if not isinstance(item, TARGET_TYPES)]
    if plain:
        if shape is not None:
            raise TargetError("this model outputs a map per class: explain a class with target='seg:LABEL' "
                              "(Segmentation(class))", param="target")
        if out.ndim != 2:
            raise TargetError(f"the model's output is {tuple(out.shape[1:])}, not class scores: use "
                              "target='raw' or Embedding(reference)", param="target")
    for item in spec:
        if not isinstance(item, TARGET_TYPES):
            idx = resolve_targets([item], out, class_names)
            cols.extend(Column("class", idx[:, j]) for j in range(idx.shape[1]))
            continue
        names = class_names if shape is not None or len(class_names) == out.shape[-1] else \
            [f"class {i}" for i in range(out.shape[-1])]
        full = lambda k: torch.full((N,), k, dtype=torch.long, device=dev)  # noqa: E731
        if isinstance(item, Softmax):
            idx = out.argmax(1) if item.cls is None else full(resolve_label(item.cls, names))
            cols.append(Column("softmax", idx, label=None))
        elif isinstance(item, Versus):
            a, b = resolve_label(item.a, names), resolve_label(item.b, names)
            cols.append(Column("versus", full(a), label=f"{_name(names, a)} vs {_name(names, b)}", other=full(b)))
        elif isinstance(item, Sigmoid):
            if out[0].numel() != 1:
                raise TargetError(f"target 'sigmoid' needs a model with one output (a binary classifier's "
                                  f"logit); this one has {out[0].numel()}", param="target")
            cols.append(Column("sigmoid", full(1 if item.positive else 0), sign=1.0 if item.positive else -1.0,
                               label="positive (sigmoid)" if item.positive else "negative (sigmoid)"))
        elif isinstance(item, RawOutput):
            cols.append(Column("raw", full(0), label="raw output"))
        elif isinstance(item, Segmentation):
            if shape is None:
                raise TargetError("a segmentation target needs a model whose output is a map per class "
                                  "(N, classes, H, W)", param="target")
            k = resolve_label(item.cls, names)
            if item.mask is None:
                mask = (out.reshape(N, *shape).argmax(1) == k).float()
                empty = (mask.sum((-2, -1)) == 0).nonzero(as_tuple=True)[0]
                if empty.numel():
                    raise TargetError(f"no pixel of image {int(empty[0])} is predicted as {_name(names, k)!r}; "
                                      "pass Segmentation(class, mask=...)", param="target")
            else:
                mask = as_mask(item.mask, shape).to(dev)[None].expand(N, -1, -1)
            cols.append(Column("segmentation", full(k), label=f"{_name(names, k)} (mask)", mask=mask,
                               shape=tuple(shape)))
        elif isinstance(item, Embedding):
            vec = torch.as_tensor(item.reference).to(dev).float().reshape(-1)
            if vec.numel() != out[0].numel():
                raise TargetError(f"the reference embedding has {vec.numel()} values, the model's output "
                                  f"{out[0].numel()}", param="target")
            cols.append(Column("embedding", full(0), label=item.label, vector=vec))
    return Columns(cols)
