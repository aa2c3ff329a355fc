"""The relabel and review paths run a fixed, small number of SQL statements per request,
whatever the page size or the number of classes (no query per tile, per class or per score)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from api.main import create_app
from core.db import transaction
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.security import new_api_token, token_digest
from core.tables import ApiToken, Image, ImageScore, ImageState, ModelVersion
from core.users import create_user
from tests.conftest import migrated

RELABEL_BOUND = 9
LISTING_BOUND = 7
# The listing, plus the menus of reject reasons and search queries (one statement each).
PAGE_BOUND = 10


def _seed(tmp_path: Path, classes: int, images: int) -> tuple[TestClient, int, str]:
    settings, factory = migrated(tmp_path, "k")
    token = new_api_token()
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        names = [ClassIn(name=f"class{n}") for n in range(classes)]
        project = create_project(s, ProjectIn(name="p", classes=names), user.id)
        s.flush()
        ids = [c.id for c in project.classes]
        rows = [
            Image(
                project_id=project.id,
                sha256=f"{n:064x}",
                state=ImageState.ok,
                label_id=ids[n % classes],
            )
            for n in range(images)
        ]
        s.add_all(rows)
        model = ModelVersion(project_id=project.id, arch="resnet18")
        s.add(model)
        s.flush()
        for n, row in enumerate(rows):
            s.add(
                ImageScore(
                    model_version_id=model.id,
                    image_id=row.id,
                    method="in_sample",
                    loss=n / images,
                    label_id=row.label_id,
                    predicted_id=ids[(n + 1) % classes],
                    probability=0.5,
                )
            )
        s.add(ApiToken(user_id=user.id, name="t", token_hash=token_digest(token), prefix="x"))
        pid = project.id
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


def _engine(client: TestClient) -> Engine:
    engine: Engine = client.app.state.session_factory.kw["bind"]  # type: ignore[attr-defined]
    return engine


@pytest.mark.parametrize(("classes", "page"), [(2, 10), (8, 100)])
def test_the_review_listing_and_a_relabel_take_a_fixed_number_of_statements(
    tmp_path: Path, classes: int, page: int
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
