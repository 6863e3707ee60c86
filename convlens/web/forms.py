"""Reading requests: multipart forms, integer fields, and their OpenAPI description.

Errors name the form or query field as the client sends it (``top_k: 'many' is not an integer``).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request

from ..errors import SpecError


async def read_form(request: Request) -> tuple[bytes | None, str | None, dict[str, str]]:
    """(file bytes or None, its file name, the string fields) of a multipart request."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise HTTPException(415, "send the image as multipart/form-data with the field 'file'")
    form = await request.form(max_files=1, max_fields=16)
    try:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return None, None, fields
        return await upload.read(), upload.filename, fields
    finally:
        await form.close()


def int_field(fields: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """The integer form field ``name`` (``default`` when absent), checked to lie in lo..hi."""
    raw = fields.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{name}: {raw!r} is not an integer", param=name) from None
    if not lo <= value <= hi:
        raise SpecError(f"{name}: {value} is out of range {lo}-{hi}", param=name)
    return value


def target_value(target: str | None) -> int | str | None:
    """A ``target`` query value as ``explain`` takes it: a class index, a label, or None (top class)."""
    if target in (None, ""):
        return None
    text = str(target).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def multipart_doc(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a multipart endpoint taking ``file`` plus ``extra`` fields."""
    props: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    props.update(extra or {})
    return {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": props}}}, "required": True}}
