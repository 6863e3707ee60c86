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
import os
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from .. import __version__
from ..audit import AUDIT_CSS, load_audit
from ..errors import SpecError
from ..render.html import environment
from . import imaging
from .guard import checked_file, first_escape, inside, public, public_html
from .state import Explorer, NotFound, Unreadable, explorer

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
<table class="data"><tr><th>audit</th><th>model</th><th>state</th><th>images</th><th>accuracy</th>\
<th>possible shortcuts</th></tr>
{% for a in audits %}<tr><td class="name">{% if a.state == "done" %}<a href="/audits/{{ a.id }}">{{ a.id }}</a>\
{% else %}{{ a.id }}{% endif %}</td><td>{{ a.model }}</td><td>{{ a.state }}</td>\
<td>{{ a.images if a.images is not none else "–" }}</td><td>{{ "–" if a.accuracy is none else a.accuracy | pct }}</td>\
<td>{{ "–" if a.flagged is none else a.flagged }}</td></tr>
{% endfor %}</table>
{% else %}<p class="lead">No audit here yet: <code>convlens audit DATA --model M --out RUNS/NAME</code> writes one.</p>\
{% endif %}
</section>
{% endblock %}
"""


def _root(ctx: Explorer) -> Path:
    return ctx.need_runs().root


def _ids(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and AUDIT_ID.match(p.name) and (p / "audit.json").is_file())


def _path(ctx: Explorer, audit_id: str) -> Path:
    """The directory of an audit id; ids are checked against the listing, never joined blindly.
    An audit folder that is, or holds at any depth, a link resolving outside the runs folder is
    unreadable (404): none of its files is read."""
    root = _root(ctx)
    if not AUDIT_ID.match(audit_id) or audit_id not in _ids(root):
        raise NotFound(f"audit {audit_id!r}: no such audit under the runs folder")
    p = root / audit_id
    escape = first_escape(p, root)
    if escape is not None:
        where = "it links" if escape == "." else f"{escape!r} links"
        raise Unreadable(f"audit {audit_id!r}: unreadable ({where} outside the runs folder)")
    return p


def _manifest(path: Path) -> dict[str, Any]:
    try:
        m = json.loads((path / "audit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        m = None
    if not isinstance(m, dict):
        raise Unreadable(f"audit {path.name!r}: its audit.json cannot be read")
    return m


def _no_picture(_index: int) -> Any:
    raise SpecError("this audit's pictures lie outside the folders the explorer reads", param="audit")


def _load(path: Path, root: Path) -> Any:
    """:func:`load_audit` of a checked audit folder, whose example pictures are read only from inside
    the audited data folder (a folder audit) or from a run inside the runs folder (a run's split);
    any other picture (a forged id, a link out) is drawn as missing."""
    data = str(_manifest(path).get("data", ""))
    if data.startswith("run:"):
        body, _, part = data[4:].rpartition(":")
        run_dir = Path(body or part)
        if inside(root, run_dir) and first_escape(run_dir, root) is None:
            return load_audit(path)
        return load_audit(path, loader=_no_picture)
    base = Path(data)
    base = Path(os.path.realpath(base if base.is_dir() else base.parent))
    by_index: dict[int, str] = {}

    def picture(index: int) -> Path:
        p = Path(by_index.get(index, ""))
        if not p.is_absolute() or not inside(base, p):
            raise SpecError("this picture lies outside the audited folder", param="audit")
        return p

    res = load_audit(path, loader=picture)
    by_index.update(zip((int(i) for i in res.indices), res.ids))
    return res


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
        try:
            path = _path(ctx, audit_id)
            m = _manifest(path)
        except Unreadable as exc:
            rows.append({"id": audit_id, "state": "unreadable", "model": None, "method": None, "items": None,
                         "images": None, "accuracy": None, "flagged": None, "unreadable": str(exc)})
            continue
        summary: Any = {}
        if m.get("state") == "done" and (path / "summary.json").is_file():
            try:
                summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                summary = {}
        summary = summary if isinstance(summary, dict) else {}
        flagged = summary.get("flagged")
        rows.append({"id": audit_id, "state": m.get("state"), "model": m.get("model"), "method": m.get("method"),
                     "items": m.get("items"), "images": summary.get("images"), "accuracy": summary.get("accuracy"),
                     "flagged": len(flagged) if isinstance(flagged, list) else None})
    return public(rows, [root])


@router.get("/api/audits/{audit_id}", tags=["audits"])
async def get_audit(ctx: Ctx, audit_id: str) -> dict[str, Any]:
    """One finished audit: images, skipped, accuracy, classes with their strategies (the ``--json``
    shape), the confusion matrix, the flagged clusters and how it was made."""
    path = _path(ctx, audit_id)
    _finished(path)
    key = ("audit-json", audit_id, _stamp(path))
    hit = ctx.cams.get(key)
    if hit is None:
        res = await ctx.queue.run(_load, path, _root(ctx))
        details = res.details()
        details["skipped"] = [{"image": res.shown_name(s["image"]), "skipped": s["skipped"]} for s in res.skipped]
        details["data"] = res.shown_name(str(details.get("data")))
        details["warnings"] = [w.replace(str(res.manifest.get("data")), details["data"]) for w in details["warnings"]]
        hit = public({"id": audit_id, **details}, [_root(ctx), res.manifest.get("data", "")])
        ctx.cams.put(key, hit)
    return hit


@router.get("/api/audits/{audit_id}/overview.png", tags=["audits"], response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def audit_overview(ctx: Ctx, audit_id: str) -> Response:
    """The audit's overview: per class its mean map, then each strategy's."""
    path = _path(ctx, audit_id)
    _finished(path)
    png = checked_file(_root(ctx), path / "overview.png")
    if png is not None:
        return Response(png.read_bytes(), media_type="image/png")
    res = await ctx.queue.run(_load, path, _root(ctx))
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
            res = _load(path, _root(ctx))
            html = res.html(layout=environment().from_string(LAYOUT), public=True)
            return public_html(html, [_root(ctx), res.manifest.get("data", "")])

        html = await ctx.queue.run(build)
        ctx.cams.put(key, html)
    return HTMLResponse(html)
