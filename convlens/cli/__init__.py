"""The ``convlens`` command line: a thin shell over the Python API.

Each command lives in its own module ``convlens/cli/cmd_*.py`` and registers
itself on :data:`app`; this module discovers them, so adding a command never
touches this file.  Contract (see DESIGN.md): every command takes ``--json``
(machine-readable result on stdout and nothing else there), writes files only
under ``--out``, and turns a :class:`~convlens.errors.ConvlensError` into one
line on stderr and exit code 2.  Library errors name the *parameter* at fault
(``top_k must be at least 1``); :func:`main` prints it under the invoked
command's flag (``--top-k must be at least 1``), see :func:`flag_names`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click
import typer
import typer.main

from .._alloc import setup_process

# typer >= 0.29 vendors its own copy of click and raises that copy's exceptions;
# catch both families so usage errors always become one line and exit 2.
_CLICK_MODULES = [click.exceptions]
try:
    from typer import exceptions as _typer_exceptions
    from typer._click import exceptions as _typer_click

    _CLICK_MODULES += [_typer_click, _typer_exceptions]
except ImportError:  # pragma: no cover - older typer uses click itself
    pass


def _family(name: str) -> tuple[type, ...]:
    return tuple({getattr(m, name) for m in _CLICK_MODULES if hasattr(m, name)})


_CLICK_ERRORS = _family("ClickException")
_EXITS = _family("Exit")
_ABORTS = _family("Abort")
_NO_ARGS = _family("NoArgsIsHelpError")

app = typer.Typer(
    name="convlens",
    help="Build, train and see inside convolutional image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_commands()


def _invoked(args: list[str]) -> Any:
    """The click command the arguments name (a subcommand of a group, when there is one)."""
    command: Any = typer.main.get_command(app)
    for arg in args:
        subs = getattr(command, "commands", None)
        if not subs:
            break
        if arg.startswith("-"):
            continue
        if arg not in subs:
            break
        command = subs[arg]
    return command


def flag_names(args: list[str]) -> dict[str, str]:
    """Library parameter name -> how the invoked command spells it: ``top_k`` -> ``--top-k``
    (the longest ``--`` form of an option), ``images`` -> ``IMAGES`` (an argument)."""
    command = _invoked(args)
    names: dict[str, str] = {}
    for param in getattr(command, "params", []):
        if not param.name:
            continue
        if param.param_type_name == "argument":
            names[param.name] = param.name.upper()
            continue
        opts = [o for o in param.opts if o.startswith("--")] or list(param.opts)
        if opts:
            names[param.name] = max(opts, key=len)
    return names


def repeated_option(args: list[str]) -> str | None:
    """The one-line complaint about a single-valued option given more than once (``--epochs 2
    --epochs 3``), or None. Click keeps the last value silently; here every option of the invoked
    command that is not ``multiple`` (a flag and its ``--no-`` form count as one option) may be
    given once. The values of options are skipped, so a value that looks like an option
    (``--lr -1``) is not mistaken for one; scanning stops at ``--``."""
    command = _invoked(args)
    by_flag: dict[str, Any] = {}
    for param in getattr(command, "params", []):
        if param.param_type_name != "option":
            continue
        for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
            by_flag[opt] = param
    seen: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            continue
        name, eq, value = arg.partition("=")
        param = by_flag.get(name)
        if param is None:
            continue
        takes_value = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
        if takes_value and not eq and i < len(args):
            value = args[i]
            i += 1
        if getattr(param, "multiple", False) or getattr(param, "count", False) or param.name in ("help",):
            continue
        seen.setdefault(param.name, []).append(f"{name} {value}".strip() if takes_value else name)
    for pname, uses in seen.items():
        if len(uses) > 1:
            opts = [o for o in by_flag if by_flag[o].name == pname and o.startswith("--")] or [uses[0].split()[0]]
            flag = max((o for o in opts if not o.startswith("--no-")), key=len, default=opts[0])
            times = "twice" if len(uses) == 2 else f"{len(uses)} times"
            return f"{flag} given {times} ({', '.join(uses)}): it takes one value"
    return None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    if argv is None:  # the program, not a caller of main(argv): choose the process settings first
        setup_process()
    from ..errors import ConvlensError
    from ..render.files import no_space, shown, unlock_outputs

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        repeated = repeated_option(args)
        if repeated is not None:
            print(f"convlens: error: {repeated} (see --help)", file=sys.stderr)
            return _exit(2, argv)
        rv = app(args=args, prog_name="convlens", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except ConvlensError as exc:
        sys.stdout.flush()
        print(f"convlens: error: {shown(exc.renamed(flag_names(args)))}", file=sys.stderr)
        code = exc.exit_code
    except _NO_ARGS as exc:
        print(exc.format_message() if hasattr(exc, "format_message") else str(exc), file=sys.stderr)
        code = 0
    except _CLICK_ERRORS as exc:  # usage errors: bad option, missing argument
        msg = " ".join(exc.format_message().split())
        print(f"convlens: error: {shown(msg)} (see --help)", file=sys.stderr)
        code = 2
    except _EXITS as exc:
        code = exc.exit_code
        if isinstance(exc.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into a silent Exit(130)
            print("convlens: interrupted", file=sys.stderr)
    except _ABORTS:
        print("convlens: interrupted", file=sys.stderr)
        code = 130
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # a full disk met outside convlens' own writers (a checkpoint, a Parquet shard)
        err = no_space(exc)
        if err is exc:
            raise
        sys.stdout.flush()
        print(f"convlens: error: {err}", file=sys.stderr)
        code = 2
    finally:
        unlock_outputs()  # the --out locks this command took
    return _exit(code, argv)


def _exit(code: int, argv: list[str] | None) -> int:
    """Leave the process with ``code`` when :func:`main` runs as the program, else return it."""
    if argv is None:
        sys.exit(code)
    return code
