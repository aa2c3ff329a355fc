"""Enqueue side of Celery for the API: tasks are sent by name, never imported."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from core.kinds import QueueName, kind_of

QUEUES = tuple(QueueName)


def celery_config(broker_url: str) -> dict[str, object]:
    """Configuration shared by the sending (API) and the consuming (worker) side."""
    return {
        "broker_url": broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # The jobs table is the truth about a job; the result backend is unused.
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": "cpu",
    }


@lru_cache
def sender(broker_url: str) -> Celery:
    app = Celery("winnow")
    app.conf.update(celery_config(broker_url))
    return app


def enqueue(broker_url: str, kind: str, job_id: int) -> None:
    registered = kind_of(kind)
    sender(broker_url).send_task(registered.task, args=[job_id], queue=registered.queue.value)
