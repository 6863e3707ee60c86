"""A griffe extension for the API reference: Sphinx roles in docstrings become links.

convlens's docstrings cross-reference with Sphinx roles (``:func:`~convlens.lens.cam.explain```),
which Markdown would show as raw text. Each role becomes an optional autorefs link: a link where
the target is on a page of the reference, plain code where it is not (a private helper, a module
that has no page), so a role never fails the strict build and never hides a real warning.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|meth|class|mod|data|attr|exc|obj):`(~?)([^`<>]+?)(?:\(\))?`")


def _resolve(obj: griffe.Object, name: str) -> str:
    """The full path of ``name`` as seen from ``obj`` (itself when it is already full or unknown)."""
    if name.startswith("convlens."):
        return name
    head, _, rest = name.partition(".")
    try:
        full = obj.resolve(head)
    except Exception:  # griffe's NameResolutionError and friends: keep the name as written
        return name
    return f"{full}.{rest}" if rest else full


def link(obj: griffe.Object, text: str) -> str:
    def one(m: re.Match) -> str:
        short, name = m.group(1) == "~", m.group(2).strip()
        shown = name.rsplit(".", 1)[-1] if short else name
        target = html.escape(_resolve(obj, name), quote=True)
        return f'<autoref identifier="{target}" optional><code>{html.escape(shown)}</code></autoref>'

    return ROLE.sub(one, text)


def _walk(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = link(obj, obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member, seen)


class SphinxRoles(griffe.Extension):
    # once the whole package is loaded, so that a name defined further down a module resolves
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg, set())
