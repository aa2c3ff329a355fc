"""Thin, named tasks, one per job kind of core.kinds: each takes a job id and hands the
job function to the runner. The job function is imported when the task runs, so a worker
on the browser queue never loads torch, and one on the GPU queue never loads Playwright."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from celery import Task

from core.config import get_settings
from core.kinds import KINDS, JobKind
from workers.app import app
from workers.runner import JobFn, run_job


def job_function(kind: JobKind) -> JobFn:
    module, _, name = kind.function.partition(":")
    fn: JobFn = getattr(import_module(module), name)
    return fn


def _task_for(kind: JobKind, limit: int) -> Task[Any, Any]:
    def run(task: Task[Any, Any], job_id: int) -> str:
        # The node name (<queues>@<host>, see `winnow worker`) goes on the job row.
        return run_job(job_id, job_function(kind), worker=task.request.hostname)

    run.__name__ = run.__qualname__ = kind.name.value
    run.__doc__ = f"{kind.title}: runs {kind.function} for one job."
    register: Callable[..., Task[Any, Any]] = app.task(
        name=kind.task,
        bind=True,
        # The soft limit raises inside the job (it ends failed, its worker takes the next);
        # the hard one kills a job that ignores it.
        soft_time_limit=limit,
        time_limit=limit + 60,
        # run_job turns every error of the job itself into a failed job; what escapes it is
        # the machinery failing (the database unreachable or locked): try the message again
        # rather than drop it and leave the job queued.
        autoretry_for=(Exception,),
        retry_backoff=2,
        retry_backoff_max=60,
        max_retries=20,
    )
    return register(run)


_LIMITS = get_settings().time_limits
TASKS: dict[str, Task[Any, Any]] = {
    kind.task: _task_for(kind, _LIMITS.get(kind.name.value, kind.time_limit))
    for kind in KINDS.values()
}
