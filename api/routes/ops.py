"""Readiness and metrics, for load balancers and Prometheus."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from core.migrate import revisions

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    ready: bool
    database: str
    broker: str
    migrations: str


def _readiness(request: Request) -> Readiness:
    settings = request.app.state.settings
    checks: dict[str, Any] = {}
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, heads = revisions(settings.db_url)
        checks["migrations"] = (
            "at head"
            if current == heads
            else f"at {', '.join(current) or 'nothing'}; head is {', '.join(heads)}"
        )
    except Exception as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
        checks["migrations"] = "unknown"
    try:
        with Connection(settings.celery_broker, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable ({type(exc).__name__})"
    ready = checks["database"] == checks["broker"] == "ok" and checks["migrations"] == "at head"
    return Readiness(ready=ready, **checks)


@router.get(
    "/api/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: the reasons."}},
)
async def ready(request: Request) -> Response:
    """200 when the database and broker answer and the schema is at the newest migration;
    503 with the reasons otherwise (/api/health only says the process is up)."""
    state = await run_in_threadpool(_readiness, request)
    return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests by route and status with latency; jobs by kind and
    state, images by state and queue depth, read at scrape time. Counts over every project
    and no names; with WINNOW_METRICS_TOKEN set, only a scraper that sends it reads them."""
    expected = request.app.state.settings.metrics_token
    if expected:
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not secrets.compare_digest(sent.encode(), expected.encode()):
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
