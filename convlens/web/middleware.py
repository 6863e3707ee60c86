"""The explorer's ASGI middlewares: who may talk to it (:class:`LocalOnly`: the ``Host`` allow-list
against DNS rebinding, the ``Origin`` / ``Sec-Fetch-Site`` check against cross-site writes), the
upload size limit (:class:`LimitBody`), the time a request body may take to arrive
(:class:`BodyTimeout`) and the security headers (CSP).  SECURITY.md says which threat each meets."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Iterable
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The page's policy: everything from this server, images also as data:/blob: URLs.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

#: FastAPI's interactive docs page loads Swagger UI (an inline bootstrap script and
#: assets from a CDN); it alone gets this looser policy.  The API itself needs none.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")


class _TrackedSend:
    """An ASGI ``send`` that remembers whether the answer has started (after that, an error can only
    end the request, not answer it)."""

    def __init__(self, send: Send):
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class _TooLarge(HTTPException):
    """Raised from a request's ``receive`` past the limit: an HTTPException, so that FastAPI's body
    parsing (``File``/``Form`` fields) passes it on as it is."""

    def __init__(self, limit: int):
        super().__init__(413, f"upload is too large (limit {limit / (1024 * 1024):g} MB)")


class LimitBody:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413 JSON.

    Checks ``Content-Length`` first, and counts streamed bytes too (chunked uploads).
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    def _response(self) -> JSONResponse:
        mb = self.limit / (1024 * 1024)
        return JSONResponse({"error": f"upload is too large (limit {mb:g} MB)"}, status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                await self._response()(scope, receive, send)
                return
        seen = 0
        sent = _TrackedSend(send)

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, counting_receive, sent)
        except _TooLarge:
            if not sent.started:
                await self._response()(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: CSP and friends on every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "") in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"content-security-policy", (DOCS_CSP if docs else CSP).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: the names every explorer answers to, whatever address it is bound to (with any port)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

#: the methods that change state on the server (an upload, a kernels-lab job)
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or of an origin's netloc, lower case, without port or
    brackets (``[::1]:8000`` -> ``::1``); '' when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    if value.count(":") > 1:  # a bare IPv6 address
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return ""
    return value.rsplit(":", 1)[0] if ":" in value else value


class LocalOnly:
    """ASGI middleware: answer only requests meant for this server, from this server's pages.

    * ``Host`` must name an allowed host (``LOCAL_HOSTS`` plus ``allow_hosts``: the bound
      address, ``--allow-host`` values), with any port; anything else answers 421 JSON.  A web
      page that rebinds its own DNS name to 127.0.0.1 sends its own name as Host, so it is refused.
    * A state-changing request (POST, PUT, PATCH, DELETE) needs ``Sec-Fetch-Site`` ``same-origin``
      or ``none`` (typed by the user), or an ``Origin`` whose host is allowed; a cross-site
      ``Origin`` or ``Sec-Fetch-Site`` answers 403 JSON.  A request with neither header (curl, a
      script, a test client) is not a browser's cross-site request, and passes.
    """

    def __init__(self, app: ASGIApp, allow_hosts: Iterable[str] = ()):
        self.app = app
        hosts = [host_name(h) or h.strip().lower() for h in allow_hosts]
        self.allowed = frozenset([*LOCAL_HOSTS, *hosts]) - {"", "0.0.0.0", "::"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.allowed:
            shown = host[:60] or "(none)"
            await _refuse(scope, receive, send, 421,
                          f"host {shown!r}: this explorer answers only to {', '.join(sorted(self.allowed))} "
                          "(start it with --allow-host NAME to add one)")
            return
        if scope["type"] == "http" and scope["method"] in WRITES:
            why = self.cross_site(headers)
            if why is not None:
                await _refuse(scope, receive, send, 403, why)
                return
        await self.app(scope, receive, send)

    def cross_site(self, headers: dict[bytes, bytes]) -> str | None:
        """Why a write is refused as cross-site, or None when it may pass."""
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        origin = headers.get(b"origin")
        if site and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site[:20]}): use the explorer's own page"
        if origin is not None:
            text = origin.decode("latin-1").strip()
            netloc = urlsplit(text).netloc if "://" in text else ""
            if host_name(netloc) not in self.allowed:
                return f"cross-site request refused (Origin {text[:60]!r}): use the explorer's own page"
        return None


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, error: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await JSONResponse({"error": error}, status_code=status)(scope, receive, send)


class BodyStalled(HTTPException):
    """A request body stopped arriving (HTTP 408).  An HTTPException, so that FastAPI passes it on
    from its body parsing and the app's handler answers it as JSON."""

    def __init__(self, seconds: float):
        super().__init__(408, f"the request body stalled (no data for {seconds:g} s)", headers={"Connection": "close"})


class BodyTimeout:
    """ASGI middleware: a request body must keep arriving; a wait of more than ``seconds`` for
    its next part answers 408 JSON (or, once an answer has started, ends the request), so a
    stalled upload does not hold a worker and its memory.  uvicorn's own ``timeout_keep_alive``
    closes idle connections between requests (see ``convlens serve``)."""

    def __init__(self, app: ASGIApp, seconds: float = 30.0):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        sent = _TrackedSend(send)
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # past the body: only a disconnect is left to wait for, untimed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except asyncio.TimeoutError:
                raise BodyStalled(self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        try:
            await self.app(scope, timed_receive, sent)
        except BodyStalled as exc:  # raised where no route turned it into an answer
            if not sent.started:
                await JSONResponse({"error": exc.detail}, status_code=408, headers=exc.headers)(scope, receive, send)
