"""Prometheus metrics of a deployment, read at scrape time from the database and broker.

The job table is the truth about jobs, so job, image and queue figures are collected when
Prometheus scrapes, not counted in one process: several API processes then agree, and
workers on other machines need no metrics endpoint of their own (what each worker did
is read from the job rows it claimed).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from core.columns import aware
from core.db import transaction
from core.queue import QUEUES
from core.tables import Image, Job, JobStatus


def queue_depths(broker_url: str) -> dict[str, int] | None:
    """Messages waiting per queue: a Redis list's length, or the visible rows of kombu's
    SQLAlchemy transport (the embedded default); None for other brokers."""
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return {queue.value: int(client.llen(queue.value)) for queue in QUEUES}
        finally:
            client.close()
    if broker_url.startswith("sqla+"):
        depths = dict.fromkeys((queue.value for queue in QUEUES), 0)
        with _broker_engine(broker_url.removeprefix("sqla+")).connect() as conn:
            if not inspect(conn).has_table("kombu_message"):
                return depths  # no message was ever sent
            for name, count in conn.execute(KOMBU_DEPTHS):
                if name in depths:
                    depths[name] = int(count)
        return depths
    return None


# kombu's SQLAlchemy transport keeps messages as rows; a consumer hides the one it took.
KOMBU_DEPTHS = text(
    "SELECT q.name, COUNT(m.id) FROM kombu_queue q"
    " JOIN kombu_message m ON m.queue_id = q.id AND m.visible"
    " GROUP BY q.name"
)


@lru_cache(maxsize=4)
def _broker_engine(url: str) -> Engine:
    return create_engine(url)


def _timestamp(moment: datetime | None) -> float | None:
    return aware(moment).timestamp() if moment is not None else None


class StateCollector(Collector):
    def __init__(self, factory: sessionmaker[Session], broker_url: str) -> None:
        self.factory, self.broker_url = factory, broker_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("winnow_jobs", "Jobs by kind and state", labels=["kind", "state"])
        images = GaugeMetricFamily("winnow_images", "Images by state", labels=["state"])
        workers = GaugeMetricFamily(
            "winnow_worker_jobs",
            "Jobs by the worker that claimed them last (<queues>@<host>) and state",
            labels=["worker", "state"],
        )
        seen = GaugeMetricFamily(
            "winnow_worker_last_heartbeat_timestamp_seconds",
            "The newest heartbeat a worker wrote on any of its jobs (Unix time)",
            labels=["worker"],
        )
        oldest = GaugeMetricFamily(
            "winnow_jobs_oldest_queued_timestamp_seconds",
            "When the longest-waiting queued job of each kind was created (Unix time)",
            labels=["kind"],
        )
        with transaction(self.factory) as s:
            for kind, state, count in s.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
            ):
                jobs.add_metric([str(kind), str(state)], count)
            for image_state, count in s.execute(
                select(Image.state, func.count()).group_by(Image.state)
            ):
                images.add_metric([str(image_state)], count)
            by_worker = (
                select(Job.worker, Job.status, func.count(), func.max(Job.heartbeat_at))
                .where(Job.worker.is_not(None))
                .group_by(Job.worker, Job.status)
            )
            beats: dict[str, float] = {}
            for worker, state, count, beat in s.execute(by_worker):
                workers.add_metric([str(worker), str(state)], count)
                moment = _timestamp(beat)
                if moment is not None:
                    beats[str(worker)] = max(moment, beats.get(str(worker), moment))
            for worker, moment in sorted(beats.items()):
                seen.add_metric([worker], moment)
            waiting = (
                select(Job.kind, func.min(Job.created_at))
                .where(Job.status == JobStatus.queued)
                .group_by(Job.kind)
            )
            for kind, created in s.execute(waiting):
                moment = _timestamp(created)
                if moment is not None:
                    oldest.add_metric([str(kind)], moment)
        yield from (jobs, images, workers, seen, oldest)
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
