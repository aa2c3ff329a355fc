"""The Celery application of the workers."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_ready
from kombu import Queue

from core.config import get_settings
from core.queue import QUEUES, celery_config

log = logging.getLogger(__name__)

app = Celery("winnow", include=["workers.tasks"])
app.conf.update(celery_config(get_settings().celery_broker))
app.conf.task_queues = [Queue(name) for name in QUEUES]


def _watch_for_orphans() -> None:
    """Requeue jobs of dead workers: once at start, then every half stale period.

    At start for the embedded default (the one worker was the one that died); on a timer
    for deployments where other workers live on when one of them dies.
    """
    from workers.recovery import fail_unclaimed, requeue_orphans, send_waiting
    from workers.runner import session_factory

    settings = get_settings()
    factory = session_factory(settings.db_url)
    interval = max(1.0, settings.job_stale_after / 2)
    while True:
        try:
            requeue_orphans(factory, settings)
            fail_unclaimed(factory, settings)
            send_waiting(factory, settings)
        except Exception:
            log.warning("looking for orphaned jobs failed; trying again later", exc_info=True)
        time.sleep(interval)


@worker_ready.connect
def _start_orphan_watch(**_kwargs: Any) -> None:
    threading.Thread(target=_watch_for_orphans, name="orphan-watch", daemon=True).start()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger: logging.Logger, **_kwargs: Any) -> None:
    """WINNOW_LOG_FORMAT=json: Celery's handlers write one JSON object a line."""
    if get_settings().log_format == "json":
        from core.logs import json_handlers

        json_handlers(logger)
