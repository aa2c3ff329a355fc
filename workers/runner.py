"""Job state machine: queued -> running -> succeeded | failed | cancelled.

The database is the truth about a job. A task hands its job id to run_job with the
function that does the work; the runner owns every transaction around it, so job
functions open short ones through ``ctx.session()`` and never hold one across
network, browser or training work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.columns import aware, utcnow
from core.config import Settings, get_settings
from core.db import make_engine, make_session_factory, transaction
from core.redact import redact, redact_json
from core.store import ImageStore, image_store
from core.tables import Job, JobStatus

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job when someone asked to cancel it."""


@dataclass
class JobContext:
    job_id: int
    project_id: int
    params: dict[str, Any]
    settings: Settings
    store: ImageStore
    factory: sessionmaker[Session]
    clock: Callable[[], float] = time.monotonic
    report_interval: float = 0.5
    _last_report: float = field(default=-1e9)
    _last_cancel_check: float = field(default=-1e9)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with transaction(self.factory) as session:
            yield session

    def report(self, done: int, total: int, message: str = "", force: bool = False) -> None:
        """Store progress (throttled) and raise JobCancelled if a cancel was requested."""
        now = self.clock()
        if not force and now - self._last_report < self.report_interval:
            return
        self._last_report = now
        with self.session() as s:
            s.execute(
                update(Job)
                .where(Job.id == self.job_id)
                .values(
                    done=done,
                    total=total,
                    message=redact(message, self.settings.data_dir)[:2000],
                    updated_at=utcnow(),
                )
            )
            cancel = s.get(Job, self.job_id, populate_existing=True)
            wanted = bool(cancel and cancel.cancel_requested)
        if wanted:
            raise JobCancelled()

    def check_cancel(self) -> None:
        """Cheap cancel check for tight loops (at most every half second)."""
        now = self.clock()
        if now - self._last_cancel_check < self.report_interval:
            return
        self._last_cancel_check = now
        with self.session() as s:
            job = s.get(Job, self.job_id, populate_existing=True)
            if job is not None and job.cancel_requested:
                raise JobCancelled()


JobFn = Callable[[JobContext], dict[str, Any] | None]


def context_for(job: Job, settings: Settings, factory: sessionmaker[Session]) -> JobContext:
    return JobContext(
        job_id=job.id,
        project_id=job.project_id,
        params=dict(job.params or {}),
        settings=settings,
        store=image_store(settings),
        factory=factory,
    )


def local_job(
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
    kind: str,
    params: dict[str, Any],
) -> JobContext:
    """A job row and its context, for calling a job function in this process (tests, benches)."""
    with transaction(factory) as s:
        job = Job(project_id=project_id, kind=kind, params=params)
        s.add(job)
        s.flush()
        return context_for(job, settings, factory)


@lru_cache
def session_factory(url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(url))


def _claim(s: Session, job: Job, stale_after: float, worker: str | None) -> bool:
    """Move the job to running, atomically: of two deliveries of one message, one wins."""
    now = utcnow()
    claim = update(Job).where(Job.id == job.id, Job.status == job.status)
    if job.status is JobStatus.running:
        # Redelivered while running. A fresh heartbeat means another worker has it;
        # a stale one means that worker died, and the job (idempotent) runs again.
        beat = job.heartbeat_at or job.started_at
        if beat is not None and (now - aware(beat)).total_seconds() < stale_after:
            return False
        claim = claim.where(Job.heartbeat_at == job.heartbeat_at)
    result = s.execute(
        claim.values(
            status=JobStatus.running,
            attempts=Job.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            error=None,
            worker=worker,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


class _Heartbeat(threading.Thread):
    """Writes jobs.heartbeat_at every few seconds while the job function runs."""

    def __init__(
        self, factory: sessionmaker[Session], job_id: int, claim: int, interval: float
    ) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.factory, self.job_id, self.claim, self.interval = factory, job_id, claim, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                with transaction(self.factory) as s:
                    s.execute(
                        update(Job)
                        .where(
                            Job.id == self.job_id,
                            Job.status == JobStatus.running,
                            Job.attempts == self.claim,
                        )
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:
                # A missed beat is harmless; the next one retries.
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)


def run_job(
    job_id: int, fn: JobFn, settings: Settings | None = None, worker: str | None = None
) -> str:
    """Run one job to a final state; return that state. Never raises for job errors.
    ``worker`` (the Celery node's name) is written on the job when this run claims it."""
    settings = settings or get_settings()
    factory = session_factory(settings.db_url)
    with transaction(factory) as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s does not exist; ignoring", job_id)
            return "missing"
        if job.status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            # A redelivered message for a finished job: nothing to do.
            return job.status.value
        if job.cancel_requested:
            job.status = JobStatus.cancelled
            job.finished_at = utcnow()
            job.message = "cancelled before it started"
            return job.status.value
        if not _claim(s, job, settings.job_stale_after, worker):
            return "running elsewhere"
        # This run's claim: the final write below holds only while the claim is still ours.
        claim = s.scalar(select(Job.attempts).where(Job.id == job_id)) or 0
        ctx = context_for(job, settings, factory)

    heartbeat = _Heartbeat(factory, job_id, claim, max(0.5, settings.job_stale_after / 4))
    heartbeat.start()
    status, result, error = JobStatus.succeeded, None, None
    try:
        result = fn(ctx) or {}
    except JobCancelled:
        status = JobStatus.cancelled
    except SoftTimeLimitExceeded:
        log.error("job %s ran past its time limit", job_id)
        status = JobStatus.failed
        error = "stopped: the job ran past its time limit (see WINNOW_TIME_LIMITS)"
    except Exception as exc:
        # The traceback goes to the log; members read one line without server paths.
        log.exception("job %s failed", job_id)
        status = JobStatus.failed
        error = redact(f"{type(exc).__name__}: {exc}", settings.data_dir)
    finally:
        heartbeat.stopped.set()
        heartbeat.join()

    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if result is not None:
        values["result"] = redact_json(result, settings.data_dir)
        values["done"] = case((Job.total > Job.done, Job.total), else_=Job.done)
    if error is not None:
        values["error"] = error
        values["message"] = error.splitlines()[0][:2000]
    elif status is JobStatus.cancelled:
        values["message"] = "cancelled"
    with transaction(factory) as s:
        written = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running, Job.attempts == claim)
            .values(**values)
        )
    if not written.rowcount:  # type: ignore[attr-defined]
        # Another worker took the job over (this one looked dead) or it is gone: its
        # outcome stands, not ours.
        log.warning("job %s is no longer this worker's; its %s is dropped", job_id, status)
        return "superseded"
    return status.value
