"""``convlens serve``: the local web explorer (FastAPI + uvicorn)."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import List, Optional

import typer

from . import app
from .common import err_console


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Model(s) to serve (repeat the option); "
                                              "default: effnet-lite0."),
    runs: Optional[str] = typer.Option(None, "--runs", help="A folder of training runs to show (each is also served as "
                                       "model run:NAME)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback exposes the explorer "
                             "to the network."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest accepted upload, in MB (413 beyond)."),
    queue: int = typer.Option(32, "--queue", help="Model jobs admitted at once (503 + Retry-After beyond)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
    allow_host: Optional[List[str]] = typer.Option(
        None, "--allow-host", help="Another host name the explorer answers to (repeat the option); "
        "by default only the bound address, localhost, 127.0.0.1 and [::1]. See SECURITY.md."),
) -> None:
    """The local web explorer: predictions, CAMs, the journey, the kernels lab and your runs, in a browser.

    --runs adds the runs (each as model run:NAME) to the built-in model, which stays the default.
    """
    import uvicorn

    from ..errors import SpecError
    from ..web import create_app
    from ..web.server import uvicorn_options

    if not 0 <= port <= 65535:
        raise SpecError(f"--port {port}: not a TCP port (0-65535)")
    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise SpecError(f"--max-upload-mb {max_upload_mb}: must be a finite number > 0")
    if queue < 1:
        raise SpecError(f"--queue {queue}: must be at least 1")
    if runs is not None and not Path(runs).is_dir():
        raise SpecError(f"--runs {runs}: not a directory")
    for name in allow_host or []:
        if not name.strip() or any(c in name for c in "/@?#") or any(c.isspace() for c in name.strip()):
            raise SpecError(f"--allow-host {name!r}: give a host name or address, like myhost.lan")
    # the runs are added to the models: the built-in (or the first --model) stays first and default
    models = list(model) if model else ["effnet-lite0"]
    web = create_app(models=models, runs_dir=runs, max_upload=int(max_upload_mb * 1024 * 1024),
                     queue_size=queue, device=device, allow_hosts=[host, *(allow_host or [])])
    # load the default model now, so the first page view is quick and a bad --model fails here
    web.state.models.get(None)
    if not is_loopback(host):
        err_console.print(f"[bold yellow]warning:[/] binding {host}: the explorer is reachable from other "
                          "machines; it has no authentication. Use --host 127.0.0.1 to keep it local "
                          "(others reach it only by the names given with --allow-host).")
    shown = f"[{host}]" if ":" in host else host
    err_console.print(f"convlens explorer on http://{shown}:{port}/  (Ctrl+C to stop)")
    # idle connections close (also before a first request), the request head and the number of
    # connections are bounded (convlens.web.server); a stalled request body answers 408 (BodyTimeout)
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False, **uvicorn_options())
