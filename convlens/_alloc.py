"""Process settings that a convlens *program* chooses and a library leaves to its host.

Two settings make torch on a small CPU box much faster, but both belong to the whole process, so
the library never sets them on import; the entry points (the ``convlens`` command, which includes
``convlens serve``) call :func:`setup_process` first thing:

- ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it): torch's OpenMP threads sleep instead of
  spinning while they wait. On a busy machine spinning threads steal the CPU the work needs
  (training several times slower). libgomp reads the variable once, when torch is first
  imported, so it must be in the environment before ``import torch``.
- glibc keeps freed memory for reuse (:func:`keep_freed_memory`): capturing feature maps frees
  and allocates hundreds of megabytes per call, and with glibc's defaults blocks that large are
  given back to the OS and page-faulted in again on the next call. It only changes when memory
  goes back to the OS, never how much a program may use: a process keeps up to the trim
  threshold (1 GiB) of freed memory. It does nothing outside glibc (macOS, Windows, musl).
  ``CONVLENS_KEEP_FREED_MEMORY=0`` turns it off for the entry points.

A Python session opts in with one line, ``convlens.keep_freed_memory()``, and sets
``OMP_WAIT_POLICY`` itself before importing torch. bench/RESULTS.md has the measurements.
"""

from __future__ import annotations

import os
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_done = False

#: the environment variable that turns the entry points' allocator setting off (``0``)
ENV = "CONVLENS_KEEP_FREED_MEMORY"
#: the OpenMP wait policy the entry points choose when the user has not chosen one
WAIT_POLICY = "PASSIVE"


def keep_freed_memory(mmap_threshold: int = 512 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Let glibc keep freed memory for reuse: raise its mmap and trim thresholds (default 512 MiB /
    1 GiB) for this whole process. Returns True if applied (False outside glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: ~5 ms to import, paid only by a process that applies this

    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname (find_library spawns ldconfig: slower)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    _done = ok
    return ok


def kept() -> bool:
    """Whether :func:`keep_freed_memory` is in effect in this process."""
    return _done


def apply_default() -> bool:
    """:func:`keep_freed_memory` unless ``CONVLENS_KEEP_FREED_MEMORY=0``; True if applied."""
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    return keep_freed_memory()


def setup_process() -> dict[str, object]:
    """What an entry point calls before any torch import: the OpenMP wait policy (unless the user
    set ``OMP_WAIT_POLICY``) and the allocator default. Returns what is in effect."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return {"omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "keep_freed_memory": apply_default(),
            "torch_loaded_before": "torch" in sys.modules}
