"""Self-contained HTML: Jinja2 templates shared by reports and the web page.

Images are embedded as ``data:`` URIs and the stylesheet is inlined, so a
report is one file that opens offline and makes no network request.
"""

from __future__ import annotations

import base64
import io
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from .files import atomic_write_bytes, text_safe


@lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment over ``convlens/render/templates`` (autoescaped)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("convlens.render", "templates"),
                      autoescape=select_autoescape(["html", "xml"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: f"{100 * float(v):.1f}%"
    env.filters["thousands"] = lambda v: f"{int(v):,}"
    env.filters["shape"] = lambda s: "×".join(map(str, s)) if s else "–"
    return env


@lru_cache(maxsize=4)
def stylesheet(name: str = "style.css") -> str:
    """The shared stylesheet's text (inlined into reports; served by the web app)."""
    return resources.files("convlens.render").joinpath("static", name).read_text(encoding="utf-8")


def data_uri(img: Image.Image, fmt: str = "PNG", quality: int = 88) -> str:
    """A PIL image as a ``data:`` URI (PNG for figures, JPEG for photos)."""
    buf = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        img.save(buf, format="PNG", optimize=False)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render(template: str, **context: Any) -> str:
    """Render a template with the shared stylesheet available as ``css``."""
    return environment().get_template(template).render(css=stylesheet(), **context)


def write_html(path: str | os.PathLike, html: str) -> Path:
    """Write atomically (temporary file, then rename), as UTF-8: a name's undecodable bytes and
    control characters appear as ``\\xNN`` (:func:`~convlens.render.files.text_safe`)."""
    html = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text_safe(html))
    return atomic_write_bytes(path, html.encode("utf-8"))


#: control characters (not tab, newline, return): invalid in HTML, and a name's ANSI escapes; shown as ``\\x1b``
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
