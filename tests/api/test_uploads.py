"""Image uploads over REST start (or share) a verify job; no worker runs here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from core.db import transaction
from core.tables import Job, JobStatus
from core.users import create_user
from tests.conftest import migrated
from tests.imagegen import picture


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings, factory = migrated(tmp_path, "s3cret")
    with transaction(factory) as s:
        create_user(s, "alice", "alice-password", is_admin=True)
    with TestClient(create_app(settings)) as c:
        token = c.post(
            "/api/auth/tokens",
            json={"username": "alice", "password": "alice-password", "name": "t"},
        )
        assert token.status_code == 201, token.text
        c.headers["Authorization"] = f"Bearer {token.json()['token']}"
        yield c


def _upload(client: TestClient, pid: int, n: int, **data: str) -> dict[str, int | None]:
    files = [("files", (f"{n}.jpg", picture("red", n), "image/jpeg"))]
    response = client.post(
        f"/api/projects/{pid}/imports/images", files=files, data={"label": "red", **data}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_uploads_in_a_row_share_the_queued_verify_job(client: TestClient) -> None:
    pid = client.post("/api/projects", json={"name": "p"}).json()["id"]
    first = _upload(client, pid, 1)
    second = _upload(client, pid, 2)
    assert first["added"] == second["added"] == 1
    assert first["verify_job_id"] is not None
    # Still queued: it will take every pending image when it starts, the second one too.
    assert second["verify_job_id"] == first["verify_job_id"]

    # Once that job has started, its list is fixed: the next upload gets a job of its own.
    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    with transaction(factory) as s:
        s.execute(
            update(Job).where(Job.id == first["verify_job_id"]).values(status=JobStatus.running)
        )
    third = _upload(client, pid, 3)
    assert third["verify_job_id"] not in (None, first["verify_job_id"])

    assert _upload(client, pid, 4, verify="false")["verify_job_id"] is None
    assert _upload(client, pid, 1)["added"] == 0  # a duplicate starts nothing
    jobs = client.get(f"/api/projects/{pid}/jobs").json()
    assert sorted(j["id"] for j in jobs if j["kind"] == "verify") == sorted(
        {first["verify_job_id"], third["verify_job_id"]}
    )
