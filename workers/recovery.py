"""Jobs that would wait for ever: found by the workers' watch and sent again.

Jobs whose broker refused them (down when the job was made) have no sent_at and are sent
as soon as it answers; a sent job still queued after job_resend_after is sent again (a
broker that lost its message). A second message for a job is harmless: the runner's claim
is atomic and a finished job ignores it.

Jobs no worker takes (no worker for their queue, a broker that keeps losing them): failed
once they have waited job_queue_max, with the reason, rather than shown queued for ever.

Jobs whose worker died: found by their stale heartbeat and queued again.

A worker killed in the middle of a job (out of memory, a power cut, `kill -9`) leaves the
job "running" for ever, and some brokers (the SQLite transport) lose the message with it.
Every worker looks for such jobs when it starts and then on a timer; the job functions are
idempotent, so running one again is safe. A job that keeps killing its workers fails after
a few tries.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.columns import utcnow
from core.config import Settings
from core.db import transaction
from core.queue import enqueue
from core.tables import Job, JobStatus

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
    """Mark orphaned jobs queued and unsent (or fail them after MAX_ATTEMPTS); return their
    ids. ``send_waiting`` then sends them."""
    requeued: list[int] = []
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
            job.sent_at = None
            requeued.append(job.id)
    for job_id in requeued:
        log.warning("job %s was orphaned by a dead worker; queued again", job_id)
    # Not sent here: send_waiting sends every unsent job, after this commit.
    return requeued


def send_waiting(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """Send queued jobs the broker never took, or took long ago; return the sent ids."""
    now = utcnow()
    resend = now - timedelta(seconds=settings.job_resend_after)
    with transaction(factory) as session:
        waiting = session.execute(
            select(Job.id, Job.kind).where(
                Job.status == JobStatus.queued,
                Job.cancel_requested.is_(False),
                or_(Job.sent_at.is_(None), Job.sent_at < resend),
            )
        ).all()
    sent = []
    for job_id, kind in waiting:
        try:
            enqueue(settings.celery_broker, kind, job_id)
        except Exception:
            log.warning("the broker still refuses job %s; trying again later", job_id)
            break
        with transaction(factory) as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued)
                .values(sent_at=utcnow(), message="sent to the queue")
            )
        sent.append(job_id)
    return sent


def fail_unclaimed(factory: sessionmaker[Session], settings: Settings) -> list[int]:
    """Fail queued jobs that have waited job_queue_max since they were made or last started
    (a requeued orphan waits from its restart); return their ids."""
    cutoff = utcnow() - timedelta(seconds=settings.job_queue_max)
    waited = func.coalesce(Job.started_at, Job.created_at)
    failed: list[int] = []
    with transaction(factory) as session:
        stmt = select(Job).where(Job.status == JobStatus.queued, waited < cutoff)
        for job in session.scalars(stmt.with_for_update(skip_locked=True)):
            job.status = JobStatus.failed
            job.finished_at = utcnow()
            job.message = job.error = (
                f"no worker took this job within {settings.job_queue_max:.0f} s; "
                "is a worker for its queue running?"
            )
            failed.append(job.id)
    for job_id in failed:
        log.warning("job %s waited queued past job_queue_max; failed", job_id)
    return failed
