"""CPU seconds spent by a process tree, read from /proc (Linux).

``getrusage(RUSAGE_CHILDREN)`` counts only children that have ended and been waited for.
It misses processes still alive (pool workers, a separate server) and children of a
parent that ignores SIGCHLD: billiard's fork server, which starts Winnow's decoders, does,
and the kernel then keeps no account of their time at all. So a thread samples the tree
every 50 ms: for each live descendant its own time and that of the children it waited
for. A process that has gone since the last sample counts with its last sample, unless
its parent's waited-for time grew by as much (then it is in the parent's figure). What a
vanished process spent after its last sample is lost (at most 50 ms each); the sampling
thread's own CPU is left out.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
INTERVAL = 0.05


class Stat(NamedTuple):
    ppid: int
    own: int  # ticks: user + system
    waited: int  # ticks of the children it has waited for


def _stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return Stat(int(fields[1]), utime + stime, cutime + cstime)


def tree(root: int, exclude: Iterable[int] = ()) -> dict[int, Stat]:
    """``root`` and its live descendants, without the subtrees of ``exclude``."""
    stats: dict[int, Stat] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    skipped, found, todo = set(exclude), {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in skipped:
            found[pid] = stats[pid]
            todo.extend(children.get(pid, []))
    return found


class CpuClock:
    """CPU spent by a process tree (this process by default) since ``start()``."""

    def __init__(self, root: int | None = None, exclude: Iterable[int] = ()) -> None:
        self.root = os.getpid() if root is None else root
        self.exclude = tuple(exclude)
        self.available = Path("/proc/self/stat").exists()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: dict[int, int] = {}
        self._last: dict[int, Stat] = {}
        self._gone = 0  # ticks of vanished processes that no parent accounts for
        self._sampling = 0.0  # CPU seconds of the sampling itself, in this process

    def start(self) -> CpuClock:
        if self.available:
            self._last = tree(self.root, self.exclude)
            self._base = {pid: s.own + s.waited for pid, s in self._last.items()}
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._sample()

    def _sample(self) -> None:
        started = time.thread_time()
        now = tree(self.root, self.exclude)
        with self._lock:
            vanished: dict[int, list[int]] = {}
            for pid, stat in self._last.items():
                if pid not in now:
                    vanished.setdefault(stat.ppid, []).append(pid)
            for parent, pids in vanished.items():
                ticks = sum(self._last[p].own + self._last[p].waited for p in pids)
                grew = now[parent].waited - self._last[parent].waited if parent in now else 0
                if grew < 0.9 * ticks:
                    self._gone += ticks
                # Either way, what they had spent before start() is not this clock's.
                self._gone -= sum(self._base.get(p, 0) for p in pids)
            self._last = now
            self._sampling += time.thread_time() - started

    def seconds(self) -> float | None:
        """CPU seconds of the tree since ``start()``; None where there is no /proc."""
        if not self.available:
            return None
        self._sample()
        with self._lock:
            live = sum(s.own + s.waited - self._base.get(pid, 0) for pid, s in self._last.items())
            own_work = self._sampling if self.root == os.getpid() else 0.0
            return (live + self._gone) / TICKS - own_work

    def ms_per(self, images: int) -> float | None:
        spent = self.seconds()
        return None if spent is None else 1000 * spent / max(images, 1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
