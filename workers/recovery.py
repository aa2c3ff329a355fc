"""Jobs whose worker died: found by their stale heartbeat and queued again.

A worker killed in the middle of a job (out of memory, a power cut, `kill -9`) leaves the
job "running" for ever, and some brokers (the SQLite transport) lose the message with it.
Every worker looks for such jobs when it starts and then on a timer; the job functions are
idempotent, so running one again is safe. A job that keeps killing its workers fails after
a few tries.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.queue import enqueue
from core.tables import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


def orphaned_jobs(session: Session, stale_after: float, now: datetime) -> list[Job]:
    cutoff = now - timedelta(seconds=stale_after)
    stmt = select(Job).where(
        Job.status == JobStatus.running,
        or_(
            Job.heartbeat_at < cutoff,
            and_(Job.heartbeat_at.is_(None), Job.started_at < cutoff),
        ),
    )
    return list(session.scalars(stmt.with_for_update(skip_locked=True)))


def requeue_orphans(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """Queue orphaned jobs again (or fail them after MAX_ATTEMPTS); return the requeued ids."""
    requeued: list[tuple[int, str]] = []
    with transaction(factory) as session:
        for job in orphaned_jobs(session, settings.job_stale_after, utcnow()):
            if job.attempts >= MAX_ATTEMPTS:
                job.status = JobStatus.failed
                job.finished_at = utcnow()
                job.message = job.error = (
                    f"the worker running this job stopped {job.attempts} times; giving up"
                )
                continue
            job.status = JobStatus.queued
            job.message = "queued again: the worker running it stopped"
            requeued.append((job.id, job.kind))
    # Enqueue after the commit, as everywhere: the worker must find the row queued.
    for job_id, kind in requeued:
        log.warning("job %s was orphaned by a dead worker; queued again", job_id)
        enqueue(settings.celery_broker, kind, job_id)
    return [job_id for job_id, _ in requeued]
