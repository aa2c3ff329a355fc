"""Job bookkeeping: add the row, (the caller commits), then queue it by task name; cancel."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import queue
from core.columns import utcnow
from core.kinds import KINDS
from core.store import ImageStore
from core.tables import ImageClass, Job, JobStatus, ModelVersion
from core.weights import WeightsError, check_weights


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


class ForeignReference(LookupError):
    """Job params name something that is not the job's project's own."""


def check_references(
    session: Session, store: ImageStore, project_id: int, params: dict[str, Any]
) -> None:
    """What job params name (a model version, classes, a weights file) must be the
    project's own; the same answer for "absent" and "another project's", as for projects."""
    weights = params.get("weights_file")
    if weights:
        try:
            check_weights(store, project_id, weights)
        except WeightsError as exc:
            raise ForeignReference(str(exc)) from exc
    model_id = params.get("model_version_id")
    if model_id is not None:
        version = session.get(ModelVersion, model_id)
        if version is None or version.project_id != project_id:
            raise ForeignReference(f"model {model_id} not found")
    class_ids = params.get("class_ids") or []
    if class_ids:
        own = set(
            session.scalars(
                select(ImageClass.id).where(
                    ImageClass.project_id == project_id, ImageClass.id.in_(class_ids)
                )
            )
        )
        missing = sorted(set(class_ids) - own)
        if missing:
            raise ForeignReference(f"classes {missing} not found")


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
