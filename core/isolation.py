"""Running a decoder over many items in child processes with memory and CPU limits.

A crash, an out-of-memory or a hang in a C decoder costs the one item it was running,
never the worker: the child is replaced and the items queued behind it go to another.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import billiard
from billiard.connection import wait
from PIL import Image

from core.decode import DecodeLimits, Reason

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Outcome(Generic[T, R]):
    item: T
    result: R | None = None
    failure: Reason | None = None  # crashed, timeout or out of memory
    error: str | None = None  # an unexpected exception in fn: a bug or I/O, not the image


def usable_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any], limits: DecodeLimits) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child_conn, fn, limits), daemon=True)
        self.process.start()
        child_conn.close()
        self.queue: deque[Any] = deque()  # items sent, in the order the child runs them
        self.since = 0.0  # when the child started on the head of the queue
        self.sent = 0
        self.broken = False

    def give(self, item: Any) -> None:
        if not self.queue:
            self.since = time.monotonic()
        self.queue.append(item)
        self.sent += 1
        try:
            self.conn.send(item)
        except OSError:
            self.broken = True  # died while idle; _collect fails it, the item is retried

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(None)
            except OSError:
                kill = True
        self.process.join(0 if kill else 5)
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.join()
        self.conn.close()


class DecoderPool(Generic[T, R]):
    """Run ``fn`` over items in forkserver children, each under memory and CPU limits.

    billiard (Celery's multiprocessing) rather than the standard library: inside a
    prefork Celery worker the standard library refuses to start children of a daemon.
    A child that dies costs only the item it was running; it is replaced and the items
    queued behind it go to another child.
    """

    def __init__(
        self,
        fn: Callable[[T], R],
        workers: int | None = None,
        limits: DecodeLimits | None = None,
        max_tasks: int = 500,
        depth: int = 3,
    ) -> None:
        self.fn = fn
        self.limits = limits or DecodeLimits()
        self.size = workers or usable_cpus()
        self.max_tasks = max_tasks
        # Items queued per child, so that none waits for the parent between two items.
        self.depth = depth
        # A stuck decoder gets the wall-clock budget of its CPU limit, then is killed.
        self.wall_seconds = float(self.limits.cpu_seconds)
        self._ctx = billiard.get_context("forkserver")
        module = getattr(fn, "func", fn).__module__
        # The fork server imports these (and the main module, which every child would
        # otherwise import again) once; each child then starts in milliseconds.
        self._ctx.set_forkserver_preload(["__main__", __name__, module])
        self._workers: list[_Worker] = []
        self._retry: deque[T] = deque()

    def __enter__(self) -> DecoderPool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop(kill=bool(worker.queue))
        self._workers = []

    def imap_unordered(self, items: Iterable[T]) -> Iterator[Outcome[T, R]]:
        """Outcomes as they finish. ``items`` may yield ``IDLE`` when it has nothing yet
        (a feed still being filled): the pool then tends to running items and asks again."""
        todo = iter(items)
        exhausted = False
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self._ctx, self.fn, self.limits))
        while True:
            idle = False
            for index, worker in enumerate(self._workers):
                if not worker.queue and (
                    worker.broken or worker.sent >= self.max_tasks or not worker.process.is_alive()
                ):
                    # Also recycled now and then, so that leaks in C decoders do not pile up.
                    worker.stop(kill=worker.broken)
                    worker = self._workers[index] = _Worker(self._ctx, self.fn, self.limits)
                while not idle and len(worker.queue) < self.depth and worker.sent < self.max_tasks:
                    item = self._retry.popleft() if self._retry else next(todo, _DONE)
                    if item is _DONE:
                        exhausted = True
                        break
                    if item is IDLE:
                        idle = True
                        break
                    worker.give(item)
            busy = [w for w in self._workers if w.queue]
            if not busy:
                if exhausted:
                    return
                continue  # the feed waited before saying IDLE: ask it again
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
            for worker in busy:
                yield from self._collect(worker)

    def _collect(self, worker: _Worker) -> Iterator[Outcome[T, R]]:
        failure: Reason | None = None
        while worker.queue and not worker.broken and worker.conn.poll():
            try:
                kind, value = worker.conn.recv()
            except (EOFError, OSError):
                failure = Reason.crashed
                break
            item, worker.since = worker.queue.popleft(), time.monotonic()
            if kind == "ok":
                yield Outcome(item, result=value)
            else:
                memory = kind == "memory"
                yield Outcome(item, failure=Reason.memory if memory else None, error=value)
        if not worker.queue:
            return
        if failure is None and (worker.broken or not worker.process.is_alive()):
            failure = Reason.crashed
        if failure is None and time.monotonic() - worker.since > self.wall_seconds:
            failure = Reason.timeout
        if failure is not None:
            worker.stop(kill=True)
            worker.broken = True
            yield Outcome(worker.queue.popleft(), failure=failure)
            self._retry.extend(worker.queue)
            worker.queue.clear()


_DONE: Any = object()
# Yielded by a feed that has no item yet but is not finished.
IDLE: Any = object()


def _serve(conn: Any, fn: Callable[[Any], Any], limits: DecodeLimits) -> None:
    """Child loop: apply the limits once, then run items until told to stop."""
    _limit_child(limits)
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        _cpu_budget(limits.cpu_seconds)
        try:
            reply: tuple[str, Any] = ("ok", fn(item))
        except MemoryError:
            reply = ("memory", None)
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def _limit_child(limits: DecodeLimits) -> None:
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        import resource

        # The address-space limit counts what is already mapped (interpreter, libraries),
        # so the budget goes on top of the current size.
        with open("/proc/self/statm") as fh:
            mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (mapped + limits.memory_bytes, hard))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no RLIMIT_AS (macOS): the wall-clock limit still applies


def _cpu_budget(seconds: int) -> None:
    try:
        import resource
    except ImportError:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime) + seconds + 1
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or soft < hard:
        # RLIMIT_CPU counts the whole life of the process; moving the soft limit before
        # each item turns it into a per-item budget. Past it the kernel kills the child.
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
