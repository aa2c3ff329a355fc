"""Request bodies are capped while they stream, before authentication: an anonymous client
cannot make the server write a large upload anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import Settings
from core.db import transaction
from core.projects import create_project
from core.schemas import ProjectIn
from core.users import create_user
from tests.conftest import migrated
from tests.imagegen import imagefolder_zip


@pytest.fixture
def app_and_project(tmp_path: Path) -> Iterator[tuple[TestClient, Settings, int, str]]:
    settings, factory = migrated(tmp_path, "k")
    settings = settings.model_copy(update={"max_zip_upload_bytes": 200_000})
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        pid = create_project(s, ProjectIn(name="p"), user.id).id
    with TestClient(create_app(settings)) as client:
        token = client.post(
            "/api/auth/tokens", json={"username": "ann", "password": "ann-password", "name": "t"}
        ).json()["token"]
        yield client, settings, pid, token


def _written(settings: Settings) -> list[Path]:
    return [p for p in settings.data_dir.rglob("*") if p.is_file() and "uploads" in p.parts]


def test_an_anonymous_upload_over_the_anonymous_cap_is_refused_unread(
    app_and_project: tuple[TestClient, Settings, int, str],
) -> None:
    client, settings, pid, _ = app_and_project
    body = b"x" * (settings.max_anonymous_bytes + 1)
    response = client.post(
        f"/api/projects/{pid}/imports/zip", files={"file": ("a.zip", body, "application/zip")}
    )
    assert response.status_code == 413
    assert _written(settings) == []


def test_a_streamed_anonymous_body_is_cut_off_once_past_the_cap(
    app_and_project: tuple[TestClient, Settings, int, str],
) -> None:
    client, settings, pid, _ = app_and_project
    sent = 0

    def chunks() -> Iterator[bytes]:
        # No Content-Length: only counting the stream can stop it.
        nonlocal sent
        for _ in range(1000):
            sent += 16_384
            yield b"y" * 16_384

    response = client.post(
        f"/api/projects/{pid}/imports/zip",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert _written(settings) == []


def test_a_bad_token_does_not_lift_the_anonymous_cap(
    app_and_project: tuple[TestClient, Settings, int, str],
) -> None:
    client, _settings, pid, _ = app_and_project
    response = client.post(
        f"/api/projects/{pid}/imports/zip",
        files={"file": ("a.zip", b"z" * 100_000, "application/zip")},
        headers={"Authorization": "Bearer wn_not-a-token"},
    )
    assert response.status_code == 413


def test_members_get_the_route_cap_and_nothing_is_kept_past_it(
    app_and_project: tuple[TestClient, Settings, int, str],
) -> None:
    client, settings, pid, token = app_and_project
    auth = {"Authorization": f"Bearer {token}"}
    small = imagefolder_zip({"red": 2})
    ok = client.post(
        f"/api/projects/{pid}/imports/zip",
        files={"file": ("a.zip", small, "application/zip")},
        data={"verify": "false"},
        headers=auth,
    )
    assert ok.status_code == 202, ok.text
    kept = _written(settings)
    too_big = client.post(
        f"/api/projects/{pid}/imports/zip",
        files={"file": ("b.zip", b"\0" * 300_000, "application/zip")},
        headers=auth,
    )
    assert too_big.status_code == 413
    assert _written(settings) == kept


def test_a_json_body_has_its_own_cap(
    app_and_project: tuple[TestClient, Settings, int, str],
) -> None:
    client, settings, _pid, token = app_and_project
    huge = {"name": "x" * (settings.max_body_bytes + 10)}
    response = client.post("/api/projects", json=huge, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 413
