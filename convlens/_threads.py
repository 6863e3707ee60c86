"""Helper threads that yield to the model: a lower scheduling priority for the threads that feed it.

On a machine with few cores, threads that decode images or write results while the model runs
preempt torch's intra-op threads in the middle of a parallel region, which then waits for its
slowest thread.  At Linux ``nice`` +19 they run in the CPU time the model leaves (and all of it
when the model waits for them).  Measured on 2 cores: the web server's model worker 15.5 ms per
image with its I/O threads at equal priority, 11.7 at +19 (alone 11.2); the audit's local engine
379 -> 409 images/s (median of 4 rounds; ``explain`` alone 409).
"""

from __future__ import annotations

import os
import threading

#: how much lower than the caller's the feeding threads run
FEEDER_NICE = 19


def lower_priority(nice: int = FEEDER_NICE) -> None:
    """Lower the calling thread's scheduling priority by ``nice`` (Linux: nice is per thread;
    lowering never needs privileges).  Nothing elsewhere, or when it is refused."""
    if nice <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass
