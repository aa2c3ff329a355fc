"""The clients' side of bench/api_load.py: 16 people relabelling and reading review pages.

Each client is a thread with one keep-alive connection and an API token of its own. The
mix is bounded in count (relabels, and a page after every relabels/pages of them counted
over all clients), not in time; the CPU each process tree spends is clocked over it.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.cputime import CpuClock


@dataclass
class Stats:
    relabel_ms: list[float] = field(default_factory=list)
    page_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    # CPU milliseconds per request (relabels and pages) of each process tree: where the
    # two cores went.
    cpu_ms: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def relabel_rate(self) -> float:
        return len(self.relabel_ms) / self.wall_s


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Client:
    """One client's keep-alive connection. The standard library's HTTP client: the load
    generator shares the two cores with the servers, and httpx spent about 2 ms of CPU a
    request (http.client under 1), time that neither server then had."""

    def __init__(self, base: str, token: str) -> None:
        parts = urlsplit(base)
        self.prefix = parts.path
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, self.prefix + path, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read().decode(errors="replace")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.conn.close()


@dataclass
class Target:
    base: str
    relabel_path: str  # with {id}
    page_path: str  # with {offset}
    body: Any  # (image number) -> JSON body

    def relabel_body(self, n: int) -> dict[str, Any]:
        result: dict[str, Any] = self.body(n)
        return result


def run_mix(
    target: Target,
    tokens: list[str],
    ids: list[int],
    relabels: int,
    pages: int,
    limit_s: float,
    trees: dict[str, int] | None = None,
) -> Stats:
    """Each client relabels its own share of distinct images with the version the target
    sends (what a page showed) and reads review pages in between. ``trees`` names process
    trees (by root pid) whose CPU time is measured over the run.

    First, untimed, each client reads a page and relabels an image of its own outside the
    measured ones: a freshly started server opens its database connections and compiles
    its statements on its first requests (130-200 ms for the first sixteen, which were
    most of the 1% slowest), and a server that people use has done that long before."""
    stats = Stats()
    roots = trees or {}
    clients = len(tokens)
    chosen = ids[:relabels]
    warm_up = ids[relabels : relabels + clients]
    started = threading.Barrier(clients + 1)
    deadline = time.monotonic() + limit_s
    done = [0, 0]  # relabels, pages

    def client(n: int) -> None:
        rng = random.Random(n)
        with Client(target.base, tokens[n]) as http:
            for status, text in (
                http.request("GET", target.page_path.format(offset=0)),
                http.request(
                    "PATCH", target.relabel_path.format(id=warm_up[n]), target.body(warm_up[n])
                ),
            ):
                if status != 200:
                    with stats.lock:
                        stats.errors.append(f"warm-up {status} {text[:200]}")
            started.wait()
            for image_id in chosen[n::clients]:
                if time.monotonic() > deadline:
                    return
                t = time.perf_counter()
                status, text = http.request(
                    "PATCH", target.relabel_path.format(id=image_id), target.body(image_id)
                )
                ms = (time.perf_counter() - t) * 1000
                with stats.lock:
                    stats.relabel_ms.append(ms)
                    if status != 200:
                        stats.errors.append(f"relabel {status} {text[:200]}")
                    # A page after every relabels/pages relabels, counted over all clients.
                    done[0] += 1
                    take = done[1] * relabels < done[0] * pages
                    if take:
                        done[1] += 1
                if take:
                    offset = rng.randrange(0, 100) * 100
                    t = time.perf_counter()
                    status, text = http.request("GET", target.page_path.format(offset=offset))
                    ms = (time.perf_counter() - t) * 1000
                    with stats.lock:
                        stats.page_ms.append(ms)
                        if status != 200:
                            stats.errors.append(f"page {status} {text[:200]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for th in threads:
        th.start()
    started.wait()
    start = time.perf_counter()
    # Each tree without the others (the server is a child of this, the clients' process).
    clocks = {
        name: CpuClock(pid, exclude=[p for p in roots.values() if p != pid]).start()
        for name, pid in roots.items()
    }
    for th in threads:
        th.join()
    stats.wall_s = time.perf_counter() - start
    served = len(stats.relabel_ms) + len(stats.page_ms)
    for name, clock in clocks.items():
        stats.cpu_ms[name] = clock.ms_per(served) or float("nan")
        clock.stop()
    return stats


def report(name: str, stats: Stats) -> None:
    print(
        f"{name}: {len(stats.relabel_ms)} relabels, {len(stats.page_ms)} pages in "
        f"{stats.wall_s:.1f} s = {stats.relabel_rate():.0f} relabels/s; relabel p50 "
        f"{pct(stats.relabel_ms, 0.5):.0f} ms p99 {pct(stats.relabel_ms, 0.99):.0f} ms max "
        f"{max(stats.relabel_ms, default=0):.0f} ms; page p50 {pct(stats.page_ms, 0.5):.0f} ms "
        f"p99 {pct(stats.page_ms, 0.99):.0f} ms; errors {len(stats.errors)}",
        flush=True,
    )
    cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in stats.cpu_ms.items())
    print(f"  CPU ms per request: {cpu}", flush=True)
    for err in stats.errors[:5]:
        print("  ", err)
