"""``import convlens`` lets glibc keep freed memory (convlens/_alloc.py), unless told not to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import convlens, convlens._alloc as a; print(a.kept())"


def _kept(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "CONVLENS_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["CONVLENS_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc only: elsewhere keep_freed_memory does nothing")
def test_import_keeps_freed_memory_unless_turned_off():
    assert _kept(None) == "True"
    assert _kept("1") == "True"
    assert _kept("0") == "False"
    assert _kept(" 0 ") == "False"
