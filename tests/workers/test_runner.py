"""The job runner's promises: members read no server paths or tracebacks, a worker that lost
its claim cannot overwrite the outcome, and no job waits for ever on a broker that was down."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.columns import utcnow
from core.config import Settings
from core.db import transaction
from core.redact import redact
from core.tables import Job, JobStatus
from core.users import create_user
from tests.conftest import migrated
from tests.services import RedisServer, free_port
from workers.recovery import fail_unclaimed, send_waiting
from workers.runner import JobContext, run_job


def test_a_failed_job_shows_one_line_without_server_paths(
    settings: Settings,
    factory: sessionmaker[Session],
    job_context: Callable[..., JobContext],
) -> None:
    ctx = job_context("verify", {})
    secret = settings.data_dir.resolve() / "models" / "3" / "weights.safetensors"

    def fails(_ctx: JobContext) -> dict[str, Any]:
        raise FileNotFoundError(f"no such file: {secret} (also /etc/winnow/conf.yml)")

    assert run_job(ctx.job_id, fails, settings) == "failed"
    with transaction(factory) as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None and job.status is JobStatus.failed
        error, message = job.error or "", job.message
    assert "Traceback" not in error and "\n" not in error
    for text in (error, message):
        assert str(settings.data_dir.resolve()) not in text and "/etc/winnow" not in text
    assert (
        error
        == "FileNotFoundError: no such file: <data>/models/3/weights.safetensors (also <path>)"
    )


def test_results_lose_server_paths_and_urls_keep_theirs(
    settings: Settings, factory: sessionmaker[Session], job_context: Callable[..., JobContext]
) -> None:
    ctx = job_context("verify", {})
    where = str(settings.data_dir.resolve() / "images")

    def succeeds(_ctx: JobContext) -> dict[str, Any]:
        return {"note": f"read {where}", "url": "https://example.org/a/b.jpg", "n": [1, where]}

    assert run_job(ctx.job_id, succeeds, settings) == "succeeded"
    with transaction(factory) as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        assert job.result == {
            "note": "read <data>/images",
            "url": "https://example.org/a/b.jpg",
            "n": [1, "<data>/images"],
        }


def test_redact_leaves_relative_paths_and_api_routes_readable() -> None:
    assert redact("models/3/onnx saved") == "models/3/onnx saved"
    assert redact("see http://127.0.0.1:8000/api/jobs/3") == "see http://127.0.0.1:8000/api/jobs/3"


def test_a_worker_that_lost_its_claim_cannot_overwrite_the_outcome(
    settings: Settings, factory: sessionmaker[Session], job_context: Callable[..., JobContext]
) -> None:
    ctx = job_context("verify", {})

    def taken_over(_ctx: JobContext) -> dict[str, Any]:
        # Meanwhile this worker looked dead and another claimed the job (attempt 2).
        with transaction(factory) as s:
            s.execute(update(Job).where(Job.id == ctx.job_id).values(attempts=Job.attempts + 1))
        return {"from": "the first worker"}

    assert run_job(ctx.job_id, taken_over, settings) == "superseded"
    with transaction(factory) as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        assert job.status is JobStatus.running and job.result is None and job.attempts == 2


def test_a_job_the_broker_refused_is_sent_once_the_broker_answers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    settings, factory = migrated(tmp_path, "k")
    settings = settings.model_copy(update={"broker_url": down})
    with transaction(factory) as s:
        create_user(s, "ann", "ann-password")
    with TestClient(create_app(settings)) as client:
        login = {"username": "ann", "password": "ann-password", "name": "t"}
        token = client.post("/api/auth/tokens", json=login).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        pid = client.post("/api/projects", json={"name": "p"}).json()["id"]
        job = client.post(f"/api/projects/{pid}/jobs", json={"kind": "verify"})
    assert job.status_code == 202, job.text
    assert job.json()["status"] == "queued" and "waiting for the queue" in job.json()["message"]

    assert send_waiting(factory, settings) == []  # still down: left for the next round
    up = settings.model_copy(update={"broker_url": redis_server.url(5)})
    assert send_waiting(factory, up) == [job.json()["id"]]
    with transaction(factory) as s:
        row = s.get(Job, job.json()["id"])
        assert row is not None and row.sent_at is not None and row.status is JobStatus.queued
    assert redis.Redis.from_url(redis_server.url(5)).llen("cpu") == 1
    assert send_waiting(factory, up) == []  # sent: not again until job_resend_after


def test_a_job_no_worker_takes_fails_after_the_queue_wait_and_a_fresh_one_waits(
    settings: Settings, factory: sessionmaker[Session], project_id: int
) -> None:
    with transaction(factory) as s:
        old, fresh = (
            Job(project_id=project_id, kind="verify", params={}, status=JobStatus.queued)
            for _ in range(2)
        )
        s.add_all([old, fresh])
        s.flush()
        old.created_at = utcnow() - timedelta(hours=2)
        ids = old.id, fresh.id
    hour = settings.model_copy(update={"job_queue_max": 3600.0})
    assert fail_unclaimed(factory, hour) == [ids[0]]
    with transaction(factory) as s:
        stale, waiting = s.get(Job, ids[0]), s.get(Job, ids[1])
        assert stale is not None and waiting is not None
        assert stale.status is JobStatus.failed and "no worker took this job" in str(stale.error)
        assert waiting.status is JobStatus.queued
