"""Let glibc keep freed memory for reuse instead of returning it to the OS at once.

Capturing many feature maps (a journey of every layer, CAM batches, the backward passes of
``explain``) allocates and frees hundreds of megabytes per call. With glibc's defaults, blocks that
large are ``mmap``ed and given back on free (its threshold adapts only up to 32 MiB), so the next
call page-faults all of it again. On 2 CPU cores that made capturing every layer of
EfficientNet-Lite0 cost 2.0x a plain forward instead of 1.15x (bench/journey_bench.py), and one
``explain`` of 5 CAM methods x 8 images take 137-154 ms instead of 81-93 ms (three fresh processes
each way, measured 2026-12-07).

So ``import convlens`` calls :func:`keep_freed_memory` once (:func:`apply_default`), for the CLI,
the web server and Python sessions alike; ``CONVLENS_KEEP_FREED_MEMORY=0`` in the environment
leaves glibc's defaults. It only changes when memory goes back to the OS, never how much a program
may use: a process keeps up to the trim threshold (1 GiB) of freed memory for its next
allocations. It does nothing outside glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import os
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(mmap_threshold: int = 512 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds (default 512 MiB / 1 GiB); True if applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: ~5 ms to import, which `import convlens` pays only when it applies this

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


#: the environment variable that turns the default off (``0``)
ENV = "CONVLENS_KEEP_FREED_MEMORY"


def apply_default() -> bool:
    """:func:`keep_freed_memory` unless ``CONVLENS_KEEP_FREED_MEMORY=0``; True if applied."""
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    return keep_freed_memory()
