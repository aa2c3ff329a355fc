"""Batches prepared in a background thread, a few ahead of the training step.

On the CPU the loader runs in the training process (worker processes would compete with
the model for the few cores and copy every batch between processes). A thread is enough to
overlap decoding and augmentation with the step: PIL, numpy and torch all release the GIL
while they compute.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

_DONE = object()


class Batches(Protocol):
    """What the training loops need of a loader: iteration and a length in batches."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Prefetcher:
    def __init__(self, loader: Batches, depth: int = 2) -> None:
        self.loader = loader
        self.depth = depth

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        buffer: queue.Queue[Any] = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def offer(item: Any) -> bool:
            while not stop.is_set():
                try:
                    buffer.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce(source: Iterable[Any]) -> None:
            try:
                for item in source:
                    if not offer(item):
                        return
                offer(_DONE)
            except BaseException as exc:  # handed to the consumer, raised there
                offer(exc)

        thread = threading.Thread(target=produce, args=(self.loader,), daemon=True)
        thread.start()
        try:
            while True:
                item = buffer.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # The consumer may stop early (a cancelled job): let the thread end too.
            stop.set()
            thread.join()
