"""The explorer's work queue: CPU-heavy work off the event loop, bounded, batched."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from .._threads import lower_priority

T = TypeVar("T")


class Busy(Exception):
    """The work queue is full; the client should retry later (HTTP 503)."""



class WorkQueue:
    """CPU-heavy work off the event loop, on a few threads, with a bounded backlog.

    At most ``capacity`` jobs are admitted (running + waiting); beyond that
    :meth:`run`, :meth:`run_io` and :meth:`batch` raise :class:`Busy` at once (the app
    answers 503 + Retry-After), so a flood of requests cannot grow memory without bound.
    One model worker by default: model hooks are per module, and torch already uses
    every core.  :meth:`batch` coalesces requests that arrive while the worker is
    busy into one batched call (one forward for many images).

    Work that never touches a model (decoding an upload, encoding PNGs of a result already
    computed) runs on its own ``io_workers`` threads through :meth:`run_io`: PIL and zlib
    release the GIL, so an upload is decoded while the model worker runs the previous
    batch, and joins the next one instead of waiting behind it (profiled at 20 clients:
    with decoding on the model worker, batches came out as 1-3 images as often as 16).

    ``io_nice`` (Linux ``nice`` of the I/O threads only) can lower their priority below the model
    worker's, so that they only fill the cores' idle moments; it is 0 by default: a nice I/O thread
    yields to *every* other process too, and on a busy machine (a training in another terminal)
    uploads and pictures then waited tens of seconds (the serve bench's gain was within noise,
    see bench/RESULTS.md).
    """

    def __init__(self, workers: int = 1, capacity: int = 32, max_batch: int = 32, io_workers: int = 2,
                 linger: float = 0.05, io_nice: int = 0):
        self.capacity = capacity
        self.io_nice = io_nice
        self.max_batch = max_batch
        self.linger = linger
        self._workers, self._io_workers = workers, max(1, io_workers)
        self._closed = True
        self.start()
        self._pending = 0
        self._lock = threading.Lock()
        self._groups: dict[Any, list[tuple[Any, asyncio.Future]]] = {}
        self._arriving: dict[Any, int] = {}  # items of a key being prepared (see batch)
        self.batches: list[int] = []  # sizes of the last batches run (for tests and the bench)

    @property
    def pending(self) -> int:
        return self._pending

    def _admit(self) -> None:
        with self._lock:
            if self._pending >= self.capacity:
                raise Busy()
            self._pending += 1

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._admit()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        finally:
            self._release()

    async def run_io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`run`, on the I/O threads: for work that never calls a model."""
        self._admit()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))
        finally:
            self._release()

    async def batch(self, key: Any, item: Any, fn: Callable[[list[Any]], list[Any]], *,
                    prepare: Callable[[], Any] | None = None) -> Any:
        """Run ``fn`` on a list of items sharing ``key``; answers this item's result.

        Items that arrive while earlier work runs are collected and handled by one
        call of ``fn`` (up to ``max_batch`` at a time); an error fails that batch.
        ``prepare``: makes the item on the I/O threads first (an upload's decoding); while
        items of ``key`` are being prepared, a batch about to start waits for them (at most
        ``linger`` seconds) so that they join it instead of waiting for the next.
        """
        self._admit()
        try:
            loop = asyncio.get_running_loop()
            if prepare is not None:
                with self._lock:
                    self._arriving[key] = self._arriving.get(key, 0) + 1
                try:
                    item = await loop.run_in_executor(self._io, prepare)
                finally:
                    with self._lock:
                        self._arriving[key] -= 1
                        if not self._arriving[key]:
                            del self._arriving[key]
            fut: asyncio.Future = loop.create_future()
            with self._lock:
                group = self._groups.setdefault(key, [])
                group.append((item, fut))
                first = len(group) == 1
            if first:
                loop.run_in_executor(self._pool, self._flush, key, fn, loop)
            return await fut
        finally:
            self._release()

    def _flush(self, key: Any, fn: Callable[[list[Any]], list[Any]], loop: asyncio.AbstractEventLoop) -> None:
        self._gather(key)
        with self._lock:
            group = self._groups.get(key, [])
            taken, rest = group[: self.max_batch], group[self.max_batch:]
            if rest:
                self._groups[key] = rest
                loop.call_soon_threadsafe(lambda: loop.run_in_executor(self._pool, self._flush, key, fn, loop))
            else:
                self._groups.pop(key, None)
        if not taken:
            return
        self.batches = (self.batches + [len(taken)])[-256:]
        try:
            results = fn([item for item, _ in taken])
            outcome = [(fut, res, None) for (_, fut), res in zip(taken, results)]
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            outcome = [(fut, None, exc) for _, fut in taken]
        for fut, res, exc in outcome:
            loop.call_soon_threadsafe(_settle, fut, res, exc)

    def _gather(self, key: Any) -> None:
        """Before a batch starts, wait (at most ``linger`` seconds) while items of its key are
        still being prepared: an upload being decoded joins this batch rather than waiting
        behind it.  Nothing on its way (one client): no wait at all."""
        deadline = time.perf_counter() + self.linger
        while time.perf_counter() < deadline:
            with self._lock:
                if not self._arriving.get(key) or len(self._groups.get(key, ())) >= self.max_batch:
                    return
            time.sleep(0.0005)

    def start(self) -> None:
        """(Re)create the worker threads: an app whose lifespan runs again (a test client per
        request, a server restarted in-process) gets working pools, not shut-down ones."""
        if self._closed:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="convlens-web")
            self._io = ThreadPoolExecutor(max_workers=self._io_workers, thread_name_prefix="convlens-io",
                                          initializer=lower_priority, initargs=(self.io_nice,))
            self._closed = False

    def shutdown(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=False, cancel_futures=True)


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the client went away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)

