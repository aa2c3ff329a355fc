"""Job bookkeeping: add the row, (the caller commits), then queue it by task name; cancel."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from core import queue
from core.kinds import KINDS
from core.tables import Job, JobStatus, utcnow


def add_job(
    session: Session, project_id: int, kind: str, params: dict[str, Any], user_id: int | None
) -> Job:
    """Add a queued job row. The caller commits, then calls ``queue_job``."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    job = Job(project_id=project_id, kind=kind, params=params, created_by=user_id)
    session.add(job)
    session.flush()
    return job


def queue_job(broker_url: str, job: Job) -> None:
    # Commit before enqueue: the worker must find the row when the message arrives.
    queue.enqueue(broker_url, job.kind, job.id)


def request_cancel(session: Session, job: Job) -> Job:
    """Queued jobs end at once; running jobs stop at their next progress report."""
    if job.status is JobStatus.queued:
        session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.queued)
            .values(
                status=JobStatus.cancelled,
                cancel_requested=True,
                finished_at=utcnow(),
                message="cancelled before it started",
            )
        )
    elif job.status is JobStatus.running:
        job.cancel_requested = True
    session.flush()
    session.refresh(job)
    return job
