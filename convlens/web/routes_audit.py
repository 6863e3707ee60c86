"""The Audit view: finished data-set audits (``convlens audit ... --out RUNS/NAME``) under ``--runs``.

An audit is a directory directly under the runs folder that holds an ``audit.json``; it is named by
that directory's name, never by a server path.  ``/api/audits`` lists them (finished or not),
``/api/audits/{id}`` is the audit's ``summary.json`` (the ``--json`` shape plus how it was made,
file names relative to the audited folder), ``/api/audits/{id}/overview.png`` its overview, and
``/audits/{id}`` the audit page (the HTML report's page with the explorer's stylesheets, served as
files under the explorer's Content-Security-Policy).  An unfinished audit answers 409.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from .. import __version__
from ..audit import AUDIT_CSS, load_audit
from ..render.html import environment
from . import imaging
from .state import Explorer, NotFound, explorer

router = APIRouter()
Ctx = Annotated[Explorer, Depends(explorer)]
AUDIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

#: the page around the audit's blocks in the explorer: the stylesheets as files, no inline style
LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}convlens{% endblock %}</title>
<link rel="stylesheet" href="/render-static/style.css">
<link rel="stylesheet" href="/audits/audit.css">
</head>
<body>
<header class="top">
  <h1><span class="brand">convlens</span> · {% block heading %}{% endblock %}</h1>
  <p>{% block subtitle %}{% endblock %}</p>
  <nav class="toc"><a href="/audits">all audits</a> <a href="/">explorer</a></nav>
  {% block toc %}{% endblock %}
</header>
<main>
{% block content %}{% endblock %}
</main>
<footer>convlens {{ version }} · the audit of {{ model }}</footer>
</body>
</html>
"""

INDEX = """{% extends layout %}
{% block title %}convlens · audits{% endblock %}
{% block heading %}audits{% endblock %}
{% block subtitle %}The data-set audits under the runs folder.{% endblock %}
{% block content %}
<section>
{% if audits %}
<table class="data"><tr><th>audit</th><th>model</th><th>state</th><th>images</th><th>accuracy</th><th>possible shortcuts</th></tr>
{% for a in audits %}<tr><td class="name">{% if a.state == "done" %}<a href="/audits/{{ a.id }}">{{ a.id }}</a>{% else %}{{ a.id }}{% endif %}</td><td>{{ a.model }}</td><td>{{ a.state }}</td><td>{{ a.images if a.images is not none else "–" }}</td><td>{{ "–" if a.accuracy is none else a.accuracy | pct }}</td><td>{{ "–" if a.flagged is none else a.flagged }}</td></tr>
{% endfor %}</table>
{% else %}<p class="lead">No audit here yet: <code>convlens audit DATA --model M --out RUNS/NAME</code> writes one.</p>{% endif %}
</section>
{% endblock %}
"""


def _root(ctx: Explorer) -> Path:
    return ctx.need_runs().root


def _ids(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and AUDIT_ID.match(p.name) and (p / "audit.json").is_file())


def _path(ctx: Explorer, audit_id: str) -> Path:
    """The directory of an audit id; ids are checked against the listing, never joined blindly."""
    root = _root(ctx)
    if not AUDIT_ID.match(audit_id) or audit_id not in _ids(root):
        raise NotFound(f"audit {audit_id!r}: no such audit under the runs folder")
    p = (root / audit_id).resolve()
    if p.parent != root:  # a symlink escaping the folder
        raise NotFound(f"audit {audit_id!r}: no such audit")
    return p


def _manifest(path: Path) -> dict[str, Any]:
    try:
        m = json.loads((path / "audit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        m = None
    if not isinstance(m, dict):
        raise NotFound(f"audit {path.name!r}: its audit.json cannot be read")
    return m


def _finished(path: Path) -> dict[str, Any]:
    m = _manifest(path)
    if m.get("state") != "done" or not (path / "summary.json").is_file():
        raise HTTPException(409, f"audit {path.name!r}: unfinished; run the same `convlens audit` again to finish it")
    return m


def _stamp(path: Path) -> int:
    return (path / "audit.json").stat().st_mtime_ns


@router.get("/api/audits", tags=["audits"])
def list_audits(ctx: Ctx) -> list[dict[str, Any]]:
    """The audits under ``--runs``, by id: state, model, images, accuracy, flagged clusters."""
    root = _root(ctx)
    rows = []
    for audit_id in _ids(root):
        m = _manifest(root / audit_id)
        summary: dict[str, Any] = {}
        if m.get("state") == "done" and (root / audit_id / "summary.json").is_file():
            try:
                summary = json.loads((root / audit_id / "summary.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                summary = {}
        rows.append({"id": audit_id, "state": m.get("state"), "model": m.get("model"), "method": m.get("method"),
                     "items": m.get("items"), "images": summary.get("images"), "accuracy": summary.get("accuracy"),
                     "flagged": len(summary["flagged"]) if "flagged" in summary else None})
    return rows


@router.get("/api/audits/{audit_id}", tags=["audits"])
async def get_audit(ctx: Ctx, audit_id: str) -> dict[str, Any]:
    """One finished audit: images, skipped, accuracy, classes with their strategies (the ``--json``
    shape), the confusion matrix, the flagged clusters and how it was made."""
    path = _path(ctx, audit_id)
    _finished(path)
    key = ("audit-json", audit_id, _stamp(path))
    hit = ctx.cams.get(key)
    if hit is None:
        res = await ctx.queue.run(load_audit, path)
        details = res.details()
        details["skipped"] = [{"image": res.shown_name(s["image"]), "skipped": s["skipped"]} for s in res.skipped]
        details["data"] = res.shown_name(str(details.get("data")))
        details["warnings"] = [w.replace(str(res.manifest.get("data")), details["data"]) for w in details["warnings"]]
        hit = {"id": audit_id, **details}
        ctx.cams.put(key, hit)
    return hit


@router.get("/api/audits/{audit_id}/overview.png", tags=["audits"], response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def audit_overview(ctx: Ctx, audit_id: str) -> Response:
    """The audit's overview: per class its mean map, then each strategy's."""
    path = _path(ctx, audit_id)
    _finished(path)
    png = path / "overview.png"
    if png.is_file():
        return Response(png.read_bytes(), media_type="image/png")
    res = await ctx.queue.run(load_audit, path)
    return Response(await ctx.queue.run(lambda: imaging.png_bytes(res.figure())), media_type="image/png")


@router.get("/audits/audit.css", include_in_schema=False)
def audit_css() -> Response:
    return Response(AUDIT_CSS, media_type="text/css")


@router.get("/audits", response_class=HTMLResponse, include_in_schema=False)
def audits_page(ctx: Ctx) -> HTMLResponse:
    env = environment()
    html = env.from_string(INDEX).render(layout=env.from_string(LAYOUT), audits=list_audits(ctx),
                                         version=__version__, model="the runs folder")
    return HTMLResponse(html)


@router.get("/audits/{audit_id}", response_class=HTMLResponse, include_in_schema=False)
async def audit_page(ctx: Ctx, audit_id: str) -> HTMLResponse:
    """The Audit view: the audit's page (classes, strategies with example overlays, shortcuts)."""
    path = _path(ctx, audit_id)
    _finished(path)
    key = ("audit-page", audit_id, _stamp(path))
    html = ctx.cams.get(key)
    if html is None:
        def build() -> str:
            return load_audit(path).html(layout=environment().from_string(LAYOUT), public=True)

        html = await ctx.queue.run(build)
        ctx.cams.put(key, html)
    return HTMLResponse(html)
