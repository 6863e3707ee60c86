"""Process settings: ``import convlens`` leaves the host process as found; the ``convlens`` program
chooses the OpenMP wait policy and the allocator policy before torch loads (convlens/_alloc.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

GLIBC = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                           reason="glibc only: elsewhere keep_freed_memory does nothing")

# runs the console entry point as the program (argv None) on `--help`, then reports what it left
PROGRAM = """
import atexit, os, sys
import convlens._alloc as a
def report():
    print("OMP", os.environ.get("OMP_WAIT_POLICY", "unset"), "KEPT", a.kept(), "TORCH", "torch" in sys.modules)
atexit.register(report)
from convlens.cli import main
sys.argv = ["convlens", "--help"]
main()
"""


def _run(code: str, **env_over: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVLENS_KEEP_FREED_MEMORY", "OMP_WAIT_POLICY")}
    env.update({k: v for k, v in env_over.items() if v is not None})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_import_changes_nothing_in_the_host_process():
    probe = "import os, convlens, convlens._alloc as a; print(a.kept(), os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    assert _run(probe) == "False unset"


@GLIBC
def test_library_opt_in_is_one_line():
    assert _run("import convlens; print(convlens.keep_freed_memory(), convlens._alloc.kept())") == "True True"


@GLIBC
def test_program_sets_thread_and_allocator_policy_before_torch():
    # torch is not loaded by the CLI's start-up, so libgomp reads the policy set by main()
    assert _run(PROGRAM) == "OMP PASSIVE KEPT True TORCH False"


@GLIBC
def test_program_respects_the_users_settings():
    assert _run(PROGRAM, OMP_WAIT_POLICY="ACTIVE") == "OMP ACTIVE KEPT True TORCH False"
    assert _run(PROGRAM, CONVLENS_KEEP_FREED_MEMORY="0") == "OMP PASSIVE KEPT False TORCH False"
    assert _run(PROGRAM, CONVLENS_KEEP_FREED_MEMORY=" 0 ") == "OMP PASSIVE KEPT False TORCH False"


def test_main_with_arguments_leaves_the_process_alone(monkeypatch):
    """main(argv) is the in-process API (tests, notebooks): it sets nothing process-wide."""
    import convlens.cli as cli

    calls = []
    monkeypatch.setattr(cli, "setup_process", lambda: calls.append(1))
    assert cli.main(["--help"]) == 0
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["convlens", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == [1]
