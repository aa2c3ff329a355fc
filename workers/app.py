"""The Celery application of the workers."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready
from kombu import Queue

from api.config import get_settings
from api.queue import QUEUES, celery_config

app = Celery("winnow", include=["workers.tasks"])
app.conf.update(celery_config(get_settings().celery_broker))
app.conf.task_queues = [Queue(name) for name in QUEUES]


@worker_ready.connect
def _recover_orphans(**_kwargs: Any) -> None:
    from workers.recovery import requeue_orphans
    from workers.runner import session_factory

    settings = get_settings()
    requeue_orphans(session_factory(settings.db_url), settings)
