"""Let glibc keep freed memory for reuse instead of returning it to the OS at once.

Capturing many feature maps (a journey of every layer, CAM batches) allocates and frees hundreds of
megabytes per call. With glibc's defaults, blocks that large are ``mmap``ed and given back on free, so
the next call page-faults all of it again: on 2 CPU cores that made capturing every layer of
EfficientNet-Lite0 cost 2.0x a plain forward instead of 1.15x (bench/journey_bench.py). The CLI and the
web server (our own processes) call :func:`keep_freed_memory` once at start; library users may call
it too. It only changes when memory goes back to the OS, never how much a program may use, and does
nothing outside glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    _done = ok
    return ok
