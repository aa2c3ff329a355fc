"""Serving the API: one process, or several, each listening on a socket of its own.

uvicorn's ``--workers`` shares one listening socket between its processes. The process
whose event loop runs first when a burst of new connections arrives (a team opening the
review page at once, clients reconnecting after a restart) accepts every connection
waiting, and keeps them: keep-alive connections never move. With bench/api_load.py's 16
clients on two processes, one process spent 1,109 ticks of CPU and the other 100 in one
run, 187 and 1,385 in another, and the busy one set the pace. With a socket per process
the kernel hands each new connection to one of them by a hash of its addresses and
ports, so they share the load.

The processes load the app first and start listening together, when all have loaded:
the port opens only when every process can take its share. One that dies after it was
listening is started again; one that fails to start stops them all.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("uvicorn.error")

# How long the processes wait for each other to load the app before listening.
START_TIMEOUT_S = 120.0


def die_with_parent() -> None:
    """In a child of `serve` (its worker, an API process): SIGTERM it when `serve` dies,
    however it dies (killed, crashed), so that nothing is left running alone. Linux only."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def supported() -> bool:
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def load(config: uvicorn.Config) -> None:
    """Load the app, then set aside every object made so far for the process's life.

    The app, its routes, the ORM's mappers and pydantic's validators are about 200,000
    objects that live as long as the process. Python's full garbage collection went
    through all of them every few thousand requests: 140-200 ms on this machine, while
    every request of the process waited (the relabels that took longest under
    bench/api_load.py's load came in runs of eight, one such pause each). Frozen, they
    are left out of every collection; what requests make is collected as before."""
    config.load()
    gc.freeze()


def serve_one(config: uvicorn.Config) -> int:
    """One API process on the host and port of ``config`` (uvicorn.run's own path, with
    the app's objects frozen after loading). Returns 3 if it failed to start, as
    uvicorn.run does."""
    load(config)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else STARTUP_FAILURE


def _serve_one(
    options: dict[str, Any], together: Barrier | None, listening: Event, parent: int
) -> None:
    die_with_parent()
    if os.getppid() != parent:  # it died before this process could ask
        return
    config = uvicorn.Config(**options)
    load(config)  # the app, before the port opens
    if together is not None:
        together.wait(timeout=START_TIMEOUT_S)
    sock = listen(config.host, config.port, config.backlog)
    listening.set()
    uvicorn.Server(config).run(sockets=[sock])


def serve_processes(count: int, options: dict[str, Any]) -> int:
    """Run ``count`` uvicorn servers of ``options`` (uvicorn.Config's arguments) until
    interrupted; the caller's signal handler ends this with an exception. Returns 1 if a
    process failed to start."""
    context = multiprocessing.get_context("spawn")
    together = context.Barrier(count)

    def start(first: bool) -> tuple[SpawnProcess, Event]:
        listening = context.Event()
        process = context.Process(
            target=_serve_one,
            args=(options, together if first else None, listening, os.getpid()),
            name="winnow-api",
        )
        process.start()
        return process, listening

    processes = [start(True) for _ in range(count)]
    log.info(
        "Starting %d API processes for http://%s:%d, each on a socket of its own",
        count,
        options["host"],
        options["port"],
    )
    try:
        while True:
            wait([p.sentinel for p, _ in processes])
            for n, (process, listening) in enumerate(processes):
                if process.is_alive():
                    continue
                if not listening.is_set():
                    # Starting it again would fail again: a port another program holds,
                    # a configuration that does not load.
                    log.error("API process %d failed to start (exit %s)", n, process.exitcode)
                    return 1
                log.warning(
                    "API process %d ended (exit %s); starting it again", n, process.exitcode
                )
                processes[n] = start(False)
    finally:
        for process, _ in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process, _ in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
