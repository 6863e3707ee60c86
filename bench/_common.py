"""Shared bench helpers: thread setup, timing, one printed line per comparison."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

# the benches run as the `convlens` program does: glibc keeps freed memory (convlens/_alloc.py);
# --glibc-defaults measures glibc's own policy, as CONVLENS_KEEP_FREED_MEMORY=0 does
if "--glibc-defaults" in sys.argv:
    os.environ["CONVLENS_KEEP_FREED_MEMORY"] = "0"
from convlens._alloc import apply_default  # noqa: E402

apply_default()

DATA = Path(os.environ.get("CONVLENS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def allocator() -> str:
    """How this process's glibc allocator is set (see convlens/_alloc.py)."""
    from convlens._alloc import kept

    return "allocator keeps freed memory (convlens default)" if kept() else "glibc's default allocator"


def setup(threads: int = 2) -> str:
    torch.set_num_threads(threads)
    dev = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {threads} threads, {allocator()}"
    if torch.cuda.is_available():
        dev += f", GPU {torch.cuda.get_device_name(0)}"
    return dev


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def line(what: str, ours: float, peer: float, unit: str = "s", peer_name: str = "peer",
         lower_is_better: bool = True) -> None:
    """One comparison: what, ours, peer, ratio (ours/peer for times)."""
    ratio = ours / peer if peer else float("nan")
    print(f"{what:<58} ours {ours:9.4f} {unit}   {peer_name} {peer:9.4f} {unit}   ratio {ratio:6.3f}x", flush=True)


def timeit_many(fns: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
    """Median wall time of each function, warmed up first and measured in interleaved rounds,
    so that allocator and CPU warm-up do not favour whichever runs later."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
