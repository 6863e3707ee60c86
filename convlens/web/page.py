"""The explorer page: one Jinja2 template, scripts and styles from ``/static`` only.

The templates of :mod:`convlens.render` (the HTML reports) sit on the same loader
path, so the page and the reports share their partials and stylesheet.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def environment() -> Environment:
    paths = [str(HERE / "templates")]
    render_templates = HERE.parent / "render" / "templates"
    if render_templates.is_dir():
        paths.append(str(render_templates))
    return Environment(loader=FileSystemLoader(paths), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True)


def render_page(**context: Any) -> str:
    """The HTML of the one-page explorer (no inline script: CSP ``script-src 'self'``)."""
    return environment().get_template("index.html").render(**context)
