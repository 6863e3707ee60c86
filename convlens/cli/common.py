"""Helpers shared by the command modules: options, JSON output, console.

Model options: every command that takes ``--model`` and loads it through :func:`load` also takes
``--classes FILE`` (class names, one per line or JSON), ``--scale`` (Keras models: the model is fed
``pixel * scale``, pixels 0-255; ``1/255`` is accepted as written), ``--mean`` and ``--std`` (one
number or one per channel, comma-separated). They are added here, when a command module
registers itself (:func:`model_options` wraps ``app.command``), so no command repeats them;
:func:`load` reads the values given to the running command. A command that has an option of the
same name keeps its own (``visualize --classes`` picks the classes to visualise).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from . import app


class SafeConsole(Console):
    """A rich Console that prints names as data: every string it renders (a line, a table cell)
    has its control characters (ANSI escapes, newlines, BEL) and undecodable bytes escaped
    (:func:`~convlens.render.files.shown`: ``\\x1b``, ``\\n``, ``\\xff``), so a file or class
    name can neither forge a line nor retitle the terminal.  Rich's own styling is unaffected."""

    def render_str(self, text: str, **kwargs: Any):  # noqa: D102 - rich's own
        from ..render.files import shown

        return super().render_str(shown(text), **kwargs)


#: Human-facing output goes to stderr when --json is on, so stdout stays pure JSON.
console = SafeConsole(stderr=False, highlight=False)
err_console = SafeConsole(stderr=True, highlight=False)

ModelOpt = typer.Option("effnet-lite0", "--model", "-m", help="Model: effnet-lite0, timm:NAME, torchvision:NAME, a run "
                        "directory, a checkpoint or a Keras .keras/.h5 file.")
WeightsOpt = typer.Option(None, "--weights", help="Local weights file (safetensors or a state dict) for "
                          "timm:/torchvision: models.")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable result on stdout and nothing else.")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto.")


def out_console(as_json: bool) -> Console:
    """Where tables and progress go: stderr in --json mode, stdout otherwise."""
    return err_console if as_json else console


def _clean(obj: Any) -> Any:
    from ..render.files import text_safe

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, Path)):  # undecodable bytes as \xNN: valid UTF-8 JSON (control characters: \u001b)
        return text_safe(obj)
    if isinstance(obj, dict):
        return {text_safe(str(k)): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _clean(obj.item())
    return obj


def emit_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout (the only thing --json prints there)."""
    sys.stdout.write(json.dumps(_clean(obj), indent=2) + "\n")
    sys.stdout.flush()


#: The model options every command that loads its model through :func:`load` takes.
MODEL_OPTIONS = (
    inspect.Parameter("classes", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(
        None, "--classes", help="Class names: a text file (one per line) or JSON (a list, {index: name} or "
        "Keras' {name: index}); default: the model's own, or classes.txt/.json beside a Keras file.")),
    inspect.Parameter("scale", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(
        None, "--scale", help="Keras models: feed pixel * SCALE (pixels 0-255), e.g. 1/255; default: read from "
        "the model (1 when it starts with a Rescaling layer, else 1/255).")),
    inspect.Parameter("mean", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(
        None, "--mean", help="Normalisation mean, one number or one per channel (0.485,0.456,0.406); for Keras "
        "models on the scaled pixels.")),
    inspect.Parameter("std", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(
        None, "--std", help="Normalisation std, one number or one per channel; for Keras models on the scaled "
        "pixels.")),
    inspect.Parameter("pretrained", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        True, "--pretrained/--no-pretrained", help="timm:/torchvision: models: fetch the pretrained weights, or "
        "build the architecture with random weights (offline, e.g. to see its layers).")),
)
_GIVEN: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("convlens_model_options")


def load(model: str, weights: str | None = None, device: str = "cpu"):
    """Resolve a --model/--weights pair to a LensModel, with the running command's model options
    (``--classes``, ``--scale``, ``--mean``, ``--std``) applied."""
    from ..models import load_model

    opts = model_option_values(_GIVEN.get({}))  # no shared mutable default on the ContextVar
    return load_model(model, weights=weights, device=device, **opts)


def model_option_values(given: dict[str, Any]) -> dict[str, Any]:
    """The command-line strings of the model options as :func:`~convlens.models.load_model` takes them."""
    out: dict[str, Any] = {}
    if given.get("pretrained") is False:
        out["pretrained"] = False
    if given.get("classes") is not None:
        out["classes"] = given["classes"]
    if given.get("scale") is not None:
        out["scale"] = _number(given["scale"], "scale")
    for name in ("mean", "std"):
        if given.get(name) is not None:
            parts = [p for p in str(given[name]).replace(" ", ",").split(",") if p]
            if not parts:
                _bad(name, given[name])
            out[name] = [_number(p, name) for p in parts]
    return out


def _number(text: str, name: str) -> float:
    """A float from ``0.5``, ``1e-3`` or a fraction ``1/255``."""
    from ..errors import SpecError

    t = str(text).strip()
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(t)
    except (ValueError, ZeroDivisionError):
        _bad(name, text)
    if not math.isfinite(value):
        raise SpecError(f"{name} must be a finite number (got {text!r})", param=name)
    return value


def _bad(name: str, text: Any):
    from ..errors import SpecError

    raise SpecError(f"{name} must be a number or comma-separated numbers, e.g. 0.5 or 1/255 (got {text!r})",
                    param=name)


def with_model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with the :data:`MODEL_OPTIONS` it lacks added to its signature (after ``--weights``,
    else after ``--model``): the wrapper takes them off, and :func:`load` sees them while ``fn`` runs.
    A command without ``model``, or one that does not load through :func:`load`, is returned as is."""
    sig = inspect.signature(fn)
    if "model" not in sig.parameters or fn.__globals__.get("load") is not load:
        return fn
    extra = [p for p in MODEL_OPTIONS if p.name not in sig.parameters]
    if not extra:
        return fn
    params = list(sig.parameters.values())
    after = "weights" if "weights" in sig.parameters else "model"
    at = [p.name for p in params].index(after) + 1
    # keyword-or-positional like the command's own parameters (typer calls with keywords only)
    added = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in extra]
    new_params = params[:at] + added + params[at:]
    if any(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params) or any(
            p.default is inspect.Parameter.empty for p in params[at:]):
        new_params = params + [p for p in extra]  # keep a valid signature: add them at the end

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        token = _GIVEN.set({p.name: kwargs.pop(p.name, None) for p in extra})
        try:
            return fn(*args, **kwargs)
        finally:
            _GIVEN.reset(token)

    command.__signature__ = sig.replace(parameters=new_params)  # type: ignore[attr-defined]
    command.__annotations__ = {**getattr(fn, "__annotations__", {}), **{p.name: p.annotation for p in extra}}
    return command


def model_options(register: Callable[..., Any]) -> Callable[..., Any]:
    """``app.command`` that registers a command with :func:`with_model_options` applied; the module
    keeps its own function unchanged."""
    if getattr(register, "adds_model_options", False):
        return register

    @functools.wraps(register)
    def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        decorate = register(*args, **kwargs)

        def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
            decorate(with_model_options(fn))
            return fn

        return apply

    command.adds_model_options = True  # type: ignore[attr-defined]
    return command


app.command = model_options(app.command)  # type: ignore[method-assign]


def check_out_dir(out: "str | os.PathLike | None", param: str = "out") -> Path | None:
    """Fail early, in one line, when ``--out`` cannot become a directory (before any work is done).

    Refused: the file-system root, the home folder, the current folder or a parent of it (``--out .``,
    ``~``, ``/``), a path that exists as a file, a path under a file, and a place whose nearest existing
    folder is not writable. Then the process takes the folder's exclusive write lock (held until it
    ends): a second command writing the same ``--out`` meanwhile is refused in one line naming the
    process that holds it; and what a killed earlier write left there (hidden temporary folders) is
    removed. Nothing else is created here: commands write under it only once their results exist.
    ``None`` (no ``--out`` given) passes through. Every command that writes calls this first.
    """
    from ..errors import SpecError
    from ..render.files import check_not_precious, clean_leftovers, lock_output

    if out is None:
        return None
    check_not_precious(out, param)
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
    lock_output(path, param)
    clean_leftovers(path)
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
