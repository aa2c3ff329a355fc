"""The hot routes (a decision, the review listing) finish their work in their own thread.

FastAPI runs a plain ``def`` route in its thread pool, then the session dependency's commit
in another hop to the pool, then the response model's validation and serialisation in a
third. Under load each hop waits for the interpreter lock, and on SQLite the process's write
lock stays held across the wait for the commit's hop. These two helpers do both in the
route's own hop; the route keeps its ``response_model`` for the OpenAPI schema, and
tests/api/test_query_count.py counts the hops.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session


def commit(session: Session) -> None:
    """Commit now; the session dependency then only closes the session, on the event loop."""
    session.commit()


def as_json(model: BaseModel) -> Response:
    """The response, serialised here: FastAPI sends a Response as it is."""
    return Response(model.model_dump_json(), media_type="application/json")
