"""The hot routes (a decision, the review listing) finish their work in their own thread.

FastAPI runs a plain ``def`` route in its thread pool, then the session dependency's commit
in another hop to the pool, then the response model's validation and serialisation in a
third. Under load each hop waits for the interpreter lock, and on SQLite the process's write
lock stays held across the wait for the commit's hop. These two helpers do both in the
route's own hop; the route keeps its ``response_model`` for the OpenAPI schema, and
tests/api/test_query_count.py counts the hops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

T = TypeVar("T")

# One pool per event loop (a served process has one; a test client may make several).
_INTERACTIVE: RunVar[CapacityLimiter] = RunVar("winnow_interactive_threads")


async def interactive(request: Request, work: Callable[..., T], *args: object) -> T:
    """Run a route's work in the small pool of threads kept for the requests a person waits
    on while cleaning (``WINNOW_INTERACTIVE_THREADS``, 2 by default).

    The work is Python holding the interpreter lock for all but its few database round
    trips, so more threads add no throughput: with FastAPI's 40, sixteen people clicking at
    once ran sixteen threads that took turns at the lock, each switch costing CPU and every
    request finishing late. With a few, the others wait their turn in order, and a request
    that started finishes first. Slow routes (predictions, imports, exports) stay in the
    big pool, so they never hold these up."""
    try:
        limiter = _INTERACTIVE.get()
    except LookupError:
        limiter = CapacityLimiter(request.app.state.settings.interactive_threads)
        _INTERACTIVE.set(limiter)
    return await anyio.to_thread.run_sync(work, *args, limiter=limiter)


def commit(session: Session) -> None:
    """Commit now; the session dependency then only closes the session, on the event loop."""
    session.commit()


def as_json(model: BaseModel) -> Response:
    """The response, serialised here: FastAPI sends a Response as it is."""
    return Response(model.model_dump_json(), media_type="application/json")
