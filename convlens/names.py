"""The one parser of name lists: ``"gradcam,scorecam"`` or a list of such strings to canonical names.

Methods (:func:`convlens.lens.cam.targets.parse_methods`), metrics
(:func:`convlens.lens.score.metrics.parse_metrics`) and sanity's controls all read their lists here,
so the rules are the same everywhere: comma-separated or a list, any case, aliases resolved, order
kept, repeats dropped, an unknown name refused in one line with the closest known ones.

>>> parse_names("GradCAM, gradcam++,gradcam", ("gradcam", "gradcam++"), param="method")
['gradcam', 'gradcam++']
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from .errors import SpecError, closest


def split_names(value: str | Sequence[str]) -> list[str]:
    """The items of a comma-separated string or of a list of them, stripped, empty ones dropped.

    Args:
        value: ``"a, b"`` or ``["a", "b,c"]`` (items that are not strings are read as ``str``).

    Returns:
        list[str]: the items in order, as written (not yet lower-cased or resolved).
    """
    parts = [value] if isinstance(value, str) else [str(p) for p in value]
    return [item.strip() for part in parts for item in part.split(",") if item.strip()]


def parse_names(value: str | Sequence[str], known: Sequence[str], *, param: str,
                aliases: Mapping[str, str] | None = None, every: str | None = None,
                normalise: Callable[[str], str] = str.lower) -> list[str]:
    """Canonical names from a name list (see the module's rules).

    Args:
        value: the list, as :func:`split_names` reads it.
        known: the canonical names, in the order ``every`` expands to.
        param: the argument named in errors (``method``, ``metric``).
        aliases: other spellings (already normalised) -> canonical names.
        every: a word that stands for all of ``known`` (``"all"``), or None.
        normalise: how a written name is folded before lookup (lower case by default).

    Returns:
        list[str]: the canonical names, in the order given, without repeats.

    Raises:
        SpecError: an unknown name (with the closest known ones), or an empty list.
    """
    aliases = aliases or {}
    out: list[str] = []
    for raw in split_names(value):
        name = normalise(raw)
        if every is not None and name == every:
            out.extend(k for k in known if k not in out)
            continue
        name = aliases.get(name, name)
        if name not in known:
            raise SpecError(f"unknown {param} {raw!r}{closest(name, known)} ({param}s: {', '.join(known)})",
                            param=param)
        if name not in out:
            out.append(name)
    if not out:
        raise SpecError(f"no {param} given: the list is empty ({param}s: {', '.join(known)})", param=param)
    return out
