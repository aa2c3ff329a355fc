"""The relabel and review paths run a fixed, small number of SQL statements per request,
whatever the page size or the number of classes (no query per tile, per class or per score)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from api.main import create_app
from core.db import transaction
from tests.conftest import migrated
from tests.scored import scored_project

RELABEL_BOUND = 4
LISTING_BOUND = 4
# Hops to the thread pool: one, the route (which checks access, works and commits);
# under load each hop waits for the interpreter lock.
HOPS_BOUND = 1
# The listing, plus the menus of reject reasons and search queries (one statement each).
PAGE_BOUND = 9


def _seed(tmp_path: Path, classes: int, images: int) -> tuple[TestClient, int, str]:
    settings, factory = migrated(tmp_path, "k")
    with transaction(factory) as s:
        seeded = scored_project(
            s, [f"class{n}" for n in range(classes)], images, loss=lambda n: n / images, owner="ann"
        )
        pid, token = seeded.project.id, seeded.tokens["ann"]
    return TestClient(create_app(settings)), pid, token


@contextmanager
def _counting(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


@contextmanager
def _hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(func, "__name__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(anyio.to_thread, "run_sync", counted)
        yield calls


def _engine(client: TestClient) -> Engine:
    engine: Engine = client.app.state.session_factory.kw["bind"]  # type: ignore[attr-defined]
    return engine


@pytest.mark.parametrize(("classes", "page"), [(2, 10), (8, 100)])
def test_the_review_listing_and_a_relabel_take_a_fixed_number_of_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, classes: int, page: int
) -> None:
    client, pid, token = _seed(tmp_path, classes, images=150)
    auth = {"Authorization": f"Bearer {token}"}
    with client:
        client.get(f"/api/projects/{pid}", headers=auth)  # the token's last use is recorded
        with _counting(_engine(client)) as listing:
            got = client.get(f"/api/projects/{pid}/images?sort=-loss&limit={page}", headers=auth)
        assert got.status_code == 200
        items = got.json()["items"]
        assert len(items) == page and items[0]["loss"] >= items[-1]["loss"]
        assert len(listing) <= LISTING_BOUND, listing
        first = items[0]
        with _counting(_engine(client)) as relabel:
            done = client.patch(
                f"/api/projects/{pid}/images/{first['id']}",
                json={"version": first["version"], "label": "class1"},
                headers=auth,
            )
        assert done.status_code == 200 and done.json()["label"] == "class1"
        assert len(relabel) <= RELABEL_BOUND, relabel
        second = items[1]
        with _hops(monkeypatch) as hops:
            got = client.get(f"/api/projects/{pid}/images?sort=-loss&limit={page}", headers=auth)
            done = client.patch(
                f"/api/projects/{pid}/images/{second['id']}",
                json={"version": second["version"], "label": "class0"},
                headers=auth,
            )
        assert got.status_code == done.status_code == 200
        assert len(hops) <= 2 * HOPS_BOUND, hops
        stale = client.patch(
            f"/api/projects/{pid}/images/{first['id']}",
            json={"version": first["version"], "label": "class0"},
            headers=auth,
        )
        assert stale.status_code == 409


@pytest.mark.parametrize("classes", [2, 8])
def test_the_review_page_takes_a_fixed_number_of_statements(tmp_path: Path, classes: int) -> None:
    client, pid, _token = _seed(tmp_path, classes, images=150)
    with client:
        login = client.post("/api/auth/login", json={"username": "ann", "password": "ann-password"})
        assert login.status_code == 200
        with _counting(_engine(client)) as page:
            got = client.get(f"/projects/{pid}/review")
        assert got.status_code == 200
        assert len(page) <= PAGE_BOUND, page


def test_a_decision_and_a_listing_run_in_the_small_interactive_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both hot routes take their thread from WINNOW_INTERACTIVE_THREADS' pool, not from
    FastAPI's 40, and other routes do not."""
    client, pid, token = _seed(tmp_path, 2, images=20)
    client.app.state.settings = client.app.state.settings.model_copy(  # type: ignore[attr-defined]
        update={"interactive_threads": 3}
    )
    auth = {"Authorization": f"Bearer {token}"}
    pools: list[int | None] = []
    run_sync = anyio.to_thread.run_sync

    async def noted(func: Any, *args: Any, limiter: Any = None, **kwargs: Any) -> Any:
        pools.append(limiter.total_tokens if limiter is not None else None)
        return await run_sync(func, *args, limiter=limiter, **kwargs)

    with client, monkeypatch.context() as patch:
        patch.setattr(anyio.to_thread, "run_sync", noted)
        items = client.get(f"/api/projects/{pid}/images?sort=-loss", headers=auth).json()
        first = items["items"][0]
        done = client.patch(
            f"/api/projects/{pid}/images/{first['id']}",
            json={"version": first["version"], "label": "class1"},
            headers=auth,
        )
        assert done.status_code == 200
        assert pools == [3, 3]
        pools.clear()
        assert client.get(f"/api/projects/{pid}", headers=auth).status_code == 200
        assert 3 not in pools
