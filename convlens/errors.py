"""User-facing errors.

Every failure a person can cause (a bad file, an unknown layer, a malformed
kernel) is a :class:`ConvlensError` whose message is one line that names the
thing and says what is wrong.  The CLI prints that line and exits with 2; the
web app answers 4xx with it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class ConvlensError(Exception):
    """Base class: a problem with the user's input, explained in one line.

    Catch ``ConvlensError`` to handle every mistake a user can make; anything else escaping
    convlens is a bug. The message is one line that names the thing at fault and what to do
    (often with the closest valid choices, see :func:`closest`).

    Args:
        message: what is wrong; any whitespace, newlines included, collapses to single spaces.
        param: the name of the library parameter at fault (``"top_k"``), when there is one. The
            message names it as the library spells it; a shell that knows the parameter by another
            name (the CLI's ``--top-k``) rewrites it with :meth:`renamed`.

    Attributes:
        exit_code: the CLI's exit status for this error (2: a usage error).
        param: the parameter at fault, or ``None``.

    Examples:
        >>> import convlens as cl                                   # doctest: +SKIP
        >>> try:                                                    # doctest: +SKIP
        ...     cl.explain("effnet-lite0", "cat.jpg", layer="blocks.99")
        ... except cl.ConvlensError as e:
        ...     print(e.param, "-", e)
    """

    exit_code = 2

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(" ".join(str(message).split()))  # always one line
        self.param = param

    def renamed(self, names: dict[str, str]) -> str:
        """The message as a shell spells the parameter: its first whole-word use is replaced.

        Args:
            names: library parameter names to the shell's (``{"top_k": "--top-k"}``).

        Returns:
            str: the message with ``param`` replaced by ``names[param]``, never inside a path or a
                dotted name; the message unchanged when ``param`` is not in ``names``.

        Examples:
            >>> SpecError("top_k must be at least 1 (got 0)", param="top_k").renamed({"top_k": "--top-k"})
            '--top-k must be at least 1 (got 0)'
        """
        text = str(self)
        if self.param and self.param in names:
            # whole words only, never inside a path or a dotted name (`/data/runs`, `runs.csv`)
            text = re.sub(rf"(?<![\w\-/\\.]){re.escape(self.param)}(?![\w\-/\\]|\.\w)", names[self.param], text,
                          count=1)
        return text


class ImageError(ConvlensError):
    """An image file could not be read (missing, not an image, truncated, too large)."""


class ModelError(ConvlensError):
    """A model name, checkpoint or weights file could not be resolved or loaded."""


class LayerError(ConvlensError):
    """A layer name that the model does not have, or one unsuitable for the request."""


class TargetError(ConvlensError):
    """A class index or label that the model does not have."""


class SpecError(ConvlensError):
    """A malformed argument: a kernel matrix, channel list, arch or augment spec."""


class DataError(ConvlensError):
    """A data source that is empty, unreadable or not what it claims to be."""


class RunError(ConvlensError):
    """A run directory that is missing, incomplete, or would be overwritten."""


def closest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """A suffix for an error message naming the choices closest to a mistyped word.

    Args:
        word: what the user typed.
        choices: the valid names.
        n: at most this many suggestions.

    Returns:
        str: ``"; did you mean: a, b?"`` (case-insensitive close matches, else the choices that
            contain ``word``), or ``""`` when nothing is close.

    Examples:
        >>> closest("gradcm", ["gradcam", "gradcam++", "scorecam"])
        '; did you mean: gradcam, gradcam++?'
    """
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:
        hits = [c for c in lowered if word.lower() in c][:n]
    if not hits:
        return ""
    return "; did you mean: " + ", ".join(lowered[h] for h in hits) + "?"
