"""Shared fixtures: a temporary data directory, a migrated SQLite database, job contexts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.db import Base, make_engine, make_session_factory, transaction
from api.models import Job, Project
from api.store import ImageStore
from workers.runner import JobContext

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


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
        with transaction(factory) as s:
            job = Job(project_id=project_id, kind=kind, params=params or {})
            s.add(job)
            s.flush()
            job_id = job.id
        return JobContext(
            job_id=job_id,
            project_id=project_id,
            params=params or {},
            settings=settings,
            store=ImageStore(settings.data_dir / "images"),
            factory=factory,
        )

    return make
