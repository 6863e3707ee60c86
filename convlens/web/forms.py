"""Reading requests: the multipart upload routes' checks, and query values as the verbs take them.

The form fields themselves are declared on the routes (FastAPI ``File``/``Form`` with bounds), so
the OpenAPI schema shows them; errors name the field as the client sends it.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, UploadFile
from starlette.datastructures import UploadFile as AnyUpload


def multipart_only(request: Request) -> None:
    """FastAPI dependency of the upload routes: the body must be multipart (415 otherwise, before any
    field is looked at), so a JSON body is told how to send an image instead of "field missing"."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise HTTPException(415, "send the image as multipart/form-data with the field 'file'")


async def read_upload(upload: UploadFile | None) -> tuple[bytes | None, str | None]:
    """(bytes, file name) of an uploaded ``file`` field, or (None, None) when none was sent."""
    if not isinstance(upload, AnyUpload):  # absent, or a text field named 'file'
        return None, None
    try:
        return await upload.read(), upload.filename
    finally:
        await upload.close()


def target_value(target: str | None) -> int | str | None:
    """A ``target`` query value as ``explain`` takes it: a class index, a label, or None (top class)."""
    if target in (None, ""):
        return None
    text = str(target).strip()
    return int(text) if text.lstrip("-").isdigit() else text
