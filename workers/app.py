"""The Celery application of the workers."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from api.config import get_settings
from api.queue import QUEUES, celery_config

app = Celery("winnow", include=["workers.tasks"])
app.conf.update(celery_config(get_settings().celery_broker))
app.conf.task_queues = [Queue(name) for name in QUEUES]
