"""Helpers shared by the command modules: options, JSON output, console."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

#: Human-facing output goes to stderr when --json is on, so stdout stays pure JSON.
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

ModelOpt = typer.Option("effnet-lite0", "--model", "-m", help="Model: effnet-lite0, timm:NAME, torchvision:NAME, a run directory or a checkpoint.")
WeightsOpt = typer.Option(None, "--weights", help="Local weights file (safetensors or a state dict) for timm:/torchvision: models.")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable result on stdout and nothing else.")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto.")


def out_console(as_json: bool) -> Console:
    """Where tables and progress go: stderr in --json mode, stdout otherwise."""
    return err_console if as_json else console


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _clean(obj.item())
    return obj


def emit_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout (the only thing --json prints there)."""
    sys.stdout.write(json.dumps(_clean(obj), indent=2) + "\n")
    sys.stdout.flush()


def load(model: str, weights: str | None = None, device: str = "cpu"):
    """Resolve a --model/--weights pair to a LensModel."""
    from ..models import load_model

    return load_model(model, weights=weights, device=device)


def check_out_dir(out: "str | os.PathLike | None", param: str = "out") -> Path | None:
    """Fail early, in one line, when ``--out`` cannot become a directory (before any work is done).

    Refused: a path that exists as a file, a path under a file, and a place whose nearest existing
    folder is not writable. Nothing is created here: commands write under it only once their results
    exist. ``None`` (no ``--out`` given) passes through. Every command that writes calls this first.
    """
    from ..errors import SpecError

    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SpecError(f"{param} {out}: exists and is not a directory", param=param)
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise SpecError(f"{param} {out}: {parent} is a file, not a directory", param=param)
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "is" if parent == path else f"is under {parent}, which is"
        raise SpecError(f"{param} {out}: {what} not writable", param=param)
    return path


def list_inputs(images: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The image paths a command works on, and the unreadable files skipped in its directories
    (one line on stderr naming them; for --json, ``{"image", "skipped"}`` rows to append)."""
    from ..images import list_images

    lost: list[tuple[Path, str]] = []
    paths = [str(p) for p in list_images(images, skipped=lost)]
    if lost:
        shown = ", ".join(f"{p} ({why})" for p, why in lost[:5]) + (", ..." if len(lost) > 5 else "")
        err_console.print(f"skipped {len(lost)} unreadable file(s) of {len(lost) + len(paths)}: {shown}",
                          highlight=False, markup=False, soft_wrap=True)
    return paths, [{"image": str(p), "skipped": why} for p, why in lost]
