"""Shared fixtures: a temporary data directory, a migrated SQLite database, job contexts."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.config import Settings
from core.db import Base, make_engine, make_session_factory, transaction
from core.migrate import upgrade
from core.tables import Project
from core.users import create_user
from tests.services import PostgresServer, RedisServer, S3Server, WorkerProcess
from workers.runner import JobContext, local_job

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def migrated(data_dir: Path, secret_key: str = "k") -> tuple[Settings, sessionmaker[Session]]:
    """Settings on ``data_dir`` and a session factory for its database, migrated to head
    with Alembic, as ``winnow serve`` leaves it."""
    settings = Settings(data_dir=data_dir, secret_key=secret_key)
    upgrade(settings.db_url)
    return settings, make_session_factory(make_engine(settings.db_url))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a migrated database, SQLite and then Postgres."""
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        url = postgres.create_database()
    else:
        url = f"sqlite:///{tmp_path / 'winnow.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _processes_using(data_root: str) -> list[tuple[int, str]]:
    """Processes of this machine (other than this one) whose WINNOW_DATA_DIR lies under
    ``data_root``: the servers and workers the tests started."""
    found = []
    marker = f"WINNOW_DATA_DIR={data_root}".encode()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as env_file:
                env = env_file.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as cmd_file:
                cmdline = cmd_file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(item.startswith(marker) for item in env):
            found.append((int(entry), cmdline[:120]))
    return found


BROWSER_FIXTURES = {"chromium", "page", "browser_settings"}
STACK_FIXTURES = {"redis_server", "postgres_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from what a test uses, so that a new test is marked without anyone
    remembering to: Chromium -> browser, Redis or Postgres -> stack; both, and a real
    worker on any broker, are slow (modules that train or serve mark themselves slow)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params: dict[str, Any] = callspec.params if callspec is not None else {}
        browser = bool(names & BROWSER_FIXTURES)
        stack = bool(names & STACK_FIXTURES) or params.get("stack") == "postgres-redis"
        if browser:
            item.add_marker(pytest.mark.browser)
        if stack:
            item.add_marker(pytest.mark.stack)
        if browser or stack or "stack" in names:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the suite, nothing the tests started may still run (a worker left behind kept
    polling its broker long after the suite, and slowed whatever ran next)."""
    yield
    root = str(tmp_path_factory.getbasetemp())
    deadline = time.monotonic() + 15  # processes stopped just now may still be exiting
    while (left := _processes_using(root)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes the tests started are still running: {left}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        secret_key="test-secret",
        fetch_allow="127.0.0.1,localhost",
    )


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def project_id(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as s:
        project = Project(name="bears")
        s.add(project)
        s.flush()
        return project.id


@pytest.fixture
def job_context(
    settings: Settings, factory: sessionmaker[Session], project_id: int
) -> Callable[..., JobContext]:
    """Build the context a job function gets from the runner, for calling it in-process."""

    def make(kind: str, params: dict[str, Any] | None = None) -> JobContext:
        return local_job(factory, settings, project_id, kind, params or {})

    return make


def service_or_skip(start: Callable[[], Any], what: str) -> Any:
    try:
        return start()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{what} not available here: {exc}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = service_or_skip(RedisServer, "Redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = service_or_skip(PostgresServer, "Postgres")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


_REDIS_DBS = itertools.count(1)


@dataclass
class Stack:
    """A running Winnow: migrated database, broker, a real worker process and an API client."""

    settings: Settings
    env: dict[str, str]
    worker: WorkerProcess
    client: TestClient
    factory: sessionmaker[Session]

    def wait_job(self, project_id: int, job_id: int, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/projects/{project_id}/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return dict(job)
            if not self.worker.alive():
                raise AssertionError(f"worker died:\n{self.worker.log()[-4000:]}")
            time.sleep(0.3)
        raise AssertionError(
            f"job {job_id} still {job['status']} after {timeout}s: {job}\n"
            f"worker log:\n{self.worker.log()[-4000:]}"
        )

    def run_job(
        self, project_id: int, kind: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = self.client.post(
            f"/api/projects/{project_id}/jobs", json={"kind": kind, "params": params or {}}
        )
        assert response.status_code == 202, response.text
        return self.wait_job(project_id, response.json()["id"])


def _stack_urls(kind: str, request: pytest.FixtureRequest, data_dir: Path) -> tuple[str, str]:
    if kind == "sqlite":
        return (
            f"sqlite:///{data_dir / 'winnow.sqlite'}",
            f"sqla+sqlite:///{data_dir / 'broker.sqlite'}",
        )
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    redis: RedisServer = request.getfixturevalue("redis_server")
    # One Redis database per stack, so that a stack never sees another's messages.
    return postgres.create_database(), redis.url(next(_REDIS_DBS) % 16)


@pytest.fixture
def stack_env_overrides() -> dict[str, str]:
    """Extra WINNOW_* variables for the stack's worker; a test module may override this."""
    return {}


@pytest.fixture(params=["sqlite", "postgres-redis"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, stack_env_overrides: dict[str, str]
) -> Iterator[Stack]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database_url, broker_url = _stack_urls(request.param, request, data_dir)
    env = {
        "WINNOW_DATA_DIR": str(data_dir),
        "WINNOW_DATABASE_URL": database_url,
        "WINNOW_BROKER_URL": broker_url,
        "WINNOW_SECRET_KEY": "test-secret",
        "WINNOW_FETCH_ALLOW": "127.0.0.1,localhost",
        **stack_env_overrides,
    }
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        secret_key="test-secret",
        fetch_allow="127.0.0.1,localhost",
    )
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        create_user(session, "admin", "admin-password", is_admin=True)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    with TestClient(create_app(settings)) as client:
        login = client.post(
            "/api/auth/login", json={"username": "admin", "password": "admin-password"}
        )
        assert login.status_code == 200, login.text
        # Scripts use bearer tokens: make one with the session, then drop the cookie.
        signer = client.app.state.signer  # type: ignore[attr-defined]
        csrf = signer.csrf_token(client.cookies["winnow_session"])
        token = client.post("/api/users/me/tokens", json={}, headers={"X-CSRF-Token": csrf})
        assert token.status_code == 201, token.text
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"
        stack = Stack(settings, env, worker, client, factory)
        try:
            yield stack
        finally:
            # A test may have replaced the worker (a restart after a crash): stop both.
            for process in {id(worker): worker, id(stack.worker): stack.worker}.values():
                process.stop()
    engine.dispose()
