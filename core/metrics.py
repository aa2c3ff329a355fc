"""Prometheus metrics of a deployment, read at scrape time from the database and broker.

The job table is the truth about jobs, so job, image and queue figures are collected when
Prometheus scrapes, not counted in one process: several API processes then agree, and
workers on other machines need no metrics endpoint of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.queue import QUEUES
from core.tables import Image, Job


def queue_depths(broker_url: str) -> dict[str, int] | None:
    """Messages waiting per queue, for a Redis broker; None for other brokers."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return {queue.value: int(client.llen(queue.value)) for queue in QUEUES}
    finally:
        client.close()


class StateCollector(Collector):
    def __init__(self, factory: sessionmaker[Session], broker_url: str) -> None:
        self.factory, self.broker_url = factory, broker_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("winnow_jobs", "Jobs by kind and state", labels=["kind", "state"])
        images = GaugeMetricFamily("winnow_images", "Images by state", labels=["state"])
        with transaction(self.factory) as s:
            for kind, state, count in s.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
            ):
                jobs.add_metric([str(kind), str(state)], count)
            for image_state, count in s.execute(
                select(Image.state, func.count()).group_by(Image.state)
            ):
                images.add_metric([str(image_state)], count)
        yield jobs
        yield images
        try:
            depths = queue_depths(self.broker_url)
        except Exception:  # the broker being down must not fail the whole scrape
            depths = None
        if depths is not None:
            queued = GaugeMetricFamily(
                "winnow_queue_messages", "Messages waiting in each broker queue", labels=["queue"]
            )
            for name, depth in depths.items():
                queued.add_metric([name], depth)
            yield queued
