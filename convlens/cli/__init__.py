"""The ``convlens`` command line: a thin shell over the Python API.

Each command lives in its own module ``convlens/cli/cmd_*.py`` and registers
itself on :data:`app`; this module discovers them, so adding a command never
touches this file.  Contract (see DESIGN.md): every command takes ``--json``
(machine-readable result on stdout and nothing else there), writes files only
under ``--out``, and turns a :class:`~convlens.errors.ConvlensError` into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click
import typer

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


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    from ..errors import ConvlensError

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        rv = app(args=args, prog_name="convlens", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except ConvlensError as exc:
        sys.stdout.flush()
        print(f"convlens: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message() if hasattr(exc, "format_message") else str(exc), file=sys.stderr)
        code = 0
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        msg = " ".join(exc.format_message().split())
        print(f"convlens: error: {msg} (see --help)", file=sys.stderr)
        code = 2
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        print("convlens: interrupted", file=sys.stderr)
        code = 130
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        sys.exit(code)
    return code
