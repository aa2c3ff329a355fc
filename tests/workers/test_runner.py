"""What members read of a job: no server paths and no tracebacks (those go to the log)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.redact import redact
from core.tables import Job, JobStatus
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
