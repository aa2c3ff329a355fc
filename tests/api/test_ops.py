"""Readiness and Prometheus metrics, as an operator's load balancer and scraper see them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from core import db
from core.config import Settings
from core.db import transaction
from core.migrate import upgrade
from core.tables import Job, JobStatus
from core.users import create_user
from tests.conftest import migrated, service_or_skip
from tests.services import PostgresServer, RedisServer, free_port


def _token(client: TestClient) -> dict[str, str]:
    login = {"username": "ann", "password": "ann-password", "name": "t"}
    return {
        "Authorization": f"Bearer {client.post('/api/auth/tokens', json=login).json()['token']}"
    }


def test_ready_only_when_the_schema_is_at_head(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="k")
    upgrade(settings.db_url, "0003")
    with TestClient(create_app(settings)) as client:
        behind = client.get("/api/ready")
        assert behind.status_code == 503
        assert behind.json()["migrations"].startswith("at 0003; head is ")
        upgrade(settings.db_url)
        assert client.get("/api/ready").json() == {
            "ready": True,
            "database": "ok",
            "broker": "ok",
            "migrations": "at head",
        }
        assert client.get("/api/health").status_code == 200


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own: these tests stop and start it."""
    server = service_or_skip(PostgresServer, "Postgres")
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.stack
def test_ready_says_503_while_postgres_is_down_and_200_when_it_is_back(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    server = own_postgres
    url = server.create_database()
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="k")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/ready").status_code == 200
        server.pause()
        down = client.get("/api/ready")
        assert down.status_code == 503 and down.json()["database"].startswith("unreachable")
        server.resume()
        assert client.get("/api/ready").status_code == 200


@pytest.mark.slow
@pytest.mark.stack
def test_requests_after_a_postgres_restart_get_fresh_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_postgres: PostgresServer
) -> None:
    """Pooled connections the restart killed are pinged and replaced when taken out after
    sitting idle (here: any idle time), so the first request after an outage is a 200."""
    server = own_postgres
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    url = server.create_database()
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="k")
    with TestClient(create_app(settings)) as client:
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        with transaction(factory) as s:
            create_user(s, "ann", "ann-password")
        auth = _token(client)
        assert client.get("/api/projects", headers=auth).status_code == 200
        server.pause()
        server.resume()
        # No request saw the outage: the pool still holds the dead connections.
        for _ in range(3):
            assert client.get("/api/projects", headers=auth).status_code == 200


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings, factory = migrated(tmp_path, "k")
    with transaction(factory) as s:
        create_user(s, "ann", "ann-password")
    with TestClient(create_app(settings)) as c:
        yield c


def test_metrics_count_requests_by_route_and_read_jobs_from_the_database(
    client: TestClient,
) -> None:
    auth = _token(client)
    pid = client.post("/api/projects", json={"name": "p"}, headers=auth).json()["id"]
    for _ in range(2):
        client.get(f"/api/projects/{pid}", headers=auth)
    assert (
        client.post(f"/api/projects/{pid}/jobs", json={"kind": "verify"}, headers=auth).status_code
        == 202
    )
    text = client.get("/metrics").text
    route = 'route="/api/projects/{project_id}"'
    assert f'winnow_http_requests_total{{method="GET",{route},status="200"}} 2.0' in text
    assert f'winnow_http_request_seconds_bucket{{le="0.005",method="GET",{route}}}' in text
    assert 'winnow_jobs{kind="verify",state="queued"} 1.0' in text
    # No time series per raw path: ids stay out of the labels.
    assert f'/api/projects/{pid}"' not in text


def test_queue_depth_is_read_from_a_redis_broker(redis_server: RedisServer) -> None:
    from core.metrics import queue_depths
    from core.queue import enqueue

    url = redis_server.url(7)
    enqueue(url, "verify", 1)
    enqueue(url, "train", 2)
    assert queue_depths(url) == {"cpu": 1, "browser": 0, "gpu": 1}
    assert queue_depths("amqp://guest@127.0.0.1//") is None  # a broker it cannot read


def test_an_unreachable_database_is_reported_without_its_address(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql+psycopg://winnow:hunter2@127.0.0.1:{port}/winnow"
    settings = Settings(data_dir=tmp_path, secret_key="k", database_url=url)
    with TestClient(create_app(settings)) as client:
        for path in ("/api/health", "/api/ready"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert "unavailable" in response.text or "unreachable" in response.text
            for secret in (str(port), "127.0.0.1", "hunter2"):
                assert secret not in response.text, (path, response.text)


def test_metrics_answer_only_the_scraper_when_a_token_is_set(tmp_path: Path) -> None:
    settings, _ = migrated(tmp_path, "k")
    settings = settings.model_copy(update={"metrics_token": "scrape-me"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert scraped.status_code == 200 and "winnow_jobs" in scraped.text


def test_queue_depth_is_read_from_the_embedded_sqlite_broker(tmp_path: Path) -> None:
    from core.metrics import queue_depths
    from core.queue import enqueue

    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    assert queue_depths(url) == {"cpu": 0, "browser": 0, "gpu": 0}  # nothing sent yet
    enqueue(url, "verify", 1)
    enqueue(url, "verify", 2)
    enqueue(url, "harvest", 3)
    assert queue_depths(url) == {"cpu": 2, "browser": 1, "gpu": 0}


def test_worker_metrics_come_from_the_jobs_they_claimed(client: TestClient) -> None:
    auth = _token(client)
    pid = client.post("/api/projects", json={"name": "p"}, headers=auth).json()["id"]
    beat = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    with transaction(factory) as s:
        for worker, state, minutes in [
            ("gpu@box", JobStatus.succeeded, 1),
            ("gpu@box", JobStatus.running, 5),
            ("cpu@other", JobStatus.failed, 2),
        ]:
            s.add(
                Job(
                    project_id=pid,
                    kind="train",
                    status=state,
                    worker=worker,
                    heartbeat_at=beat + timedelta(minutes=minutes),
                )
            )
        s.add(Job(project_id=pid, kind="rank", created_at=beat))  # queued, never claimed
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }
    assert samples[("winnow_worker_jobs", (("state", "running"), ("worker", "gpu@box")))] == 1
    assert samples[("winnow_worker_jobs", (("state", "failed"), ("worker", "cpu@other")))] == 1
    newest = (beat + timedelta(minutes=5)).timestamp()
    heartbeat = "winnow_worker_last_heartbeat_timestamp_seconds"
    assert samples[(heartbeat, (("worker", "gpu@box"),))] == newest
    oldest = "winnow_jobs_oldest_queued_timestamp_seconds"
    assert samples[(oldest, (("kind", "rank"),))] == beat.timestamp()
    # The embedded default's broker is a SQLite file: its queues are counted too.
    assert samples[("winnow_queue_messages", (("queue", "gpu"),))] == 0
