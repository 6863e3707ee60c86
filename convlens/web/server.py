"""How ``convlens serve`` runs the explorer under uvicorn: its connection limits.

uvicorn closes a keep-alive connection that stays idle ``timeout_keep_alive`` seconds *after a
response*; a connection that is opened and never sends a byte was held for good (hundreds of such
sockets kept the server's file descriptors).  :class:`IdleTimeoutH11` starts that same timer when
the connection opens, so a silent socket is closed as an idle keep-alive one is.  Any data
cancels the timer (uvicorn's own rule); a request body that stalls afterwards is the
:class:`~convlens.web.middleware.BodyTimeout`'s.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: seconds an idle connection (before its first request, or between requests) is held open
TIMEOUT_KEEP_ALIVE = 5
#: the largest request line plus headers, in bytes (h11 refuses a longer head)
MAX_HEAD = 64 * 1024
#: connections and tasks served at once (503 beyond): bounds what stalled clients can hold
MAX_CONNECTIONS = 256


class IdleTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that sends nothing for ``timeout_keep_alive`` s."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


def uvicorn_options() -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` that bound connections."""
    return {"http": IdleTimeoutH11, "timeout_keep_alive": TIMEOUT_KEEP_ALIVE,
            "h11_max_incomplete_event_size": MAX_HEAD, "limit_concurrency": MAX_CONNECTIONS,
            "timeout_graceful_shutdown": 5}
