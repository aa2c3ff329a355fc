"""Authentication and authorisation: passwords, cookies with CSRF, tokens, project membership."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.main import create_app
from core.columns import aware, utcnow
from core.db import make_engine, make_session_factory, transaction
from core.migrate import upgrade
from core.tables import ApiToken
from core.users import create_user, ensure_admin
from tests.conftest import migrated


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings, factory = migrated(tmp_path, "s3cret")
    with transaction(factory) as s:
        create_user(s, "alice", "alice-password", is_admin=True)
        create_user(s, "bob", "bob-password")
        create_user(s, "carol", "carol-password")
    with TestClient(create_app(settings)) as client:
        yield client


def _token(client: TestClient, username: str) -> dict[str, str]:
    fresh = TestClient(client.app)
    assert (
        fresh.post(
            "/api/auth/login", json={"username": username, "password": f"{username}-password"}
        ).status_code
        == 200
    )
    token = fresh.post(
        "/api/users/me/tokens", json={"name": "t"}, headers={"X-CSRF-Token": _csrf(fresh)}
    )
    assert token.status_code == 201, token.text
    return {"Authorization": f"Bearer {token.json()['token']}"}


def _csrf(client: TestClient) -> str:
    signer = client.app.state.signer  # type: ignore[attr-defined]
    return str(signer.csrf_token(client.cookies["winnow_session"]))


def test_health_needs_no_login(app_client: TestClient) -> None:
    response = app_client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_login_wrong_password(app_client: TestClient) -> None:
    bad = app_client.post("/api/auth/login", json={"username": "alice", "password": "nope"})
    assert bad.status_code == 401
    nobody = app_client.post("/api/auth/login", json={"username": "zed", "password": "nope"})
    assert nobody.status_code == 401
    assert app_client.get("/api/projects").status_code == 401


def test_cookie_writes_need_csrf_header(app_client: TestClient) -> None:
    app_client.post("/api/auth/login", json={"username": "bob", "password": "bob-password"})
    assert app_client.get("/api/users/me").json()["username"] == "bob"
    refused = app_client.post("/api/projects", json={"name": "p"})
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    made = app_client.post(
        "/api/projects", json={"name": "p"}, headers={"X-CSRF-Token": _csrf(app_client)}
    )
    assert made.status_code == 201


def test_tokens_work_and_can_be_revoked(app_client: TestClient) -> None:
    headers = _token(app_client, "bob")
    assert app_client.get("/api/users/me", headers=headers).json()["username"] == "bob"
    tokens = app_client.get("/api/users/me/tokens", headers=headers).json()
    assert len(tokens) == 1 and "token" not in tokens[0]
    assert (
        app_client.delete(f"/api/users/me/tokens/{tokens[0]['id']}", headers=headers).status_code
        == 204
    )
    assert app_client.get("/api/users/me", headers=headers).status_code == 401


def test_projects_are_scoped_to_members(app_client: TestClient) -> None:
    bob, carol, alice = (_token(app_client, u) for u in ("bob", "carol", "alice"))
    pid = app_client.post(
        "/api/projects", json={"name": "bob's", "classes": [{"name": "x"}]}, headers=bob
    ).json()["id"]
    assert app_client.get(f"/api/projects/{pid}", headers=carol).status_code == 404
    assert app_client.get("/api/projects", headers=carol).json() == []
    assert app_client.get(f"/api/projects/{pid}/images", headers=carol).status_code == 404
    # An admin sees every project.
    assert app_client.get(f"/api/projects/{pid}", headers=alice).status_code == 200
    # A viewer reads but cannot change.
    added = app_client.put(
        f"/api/projects/{pid}/members", json={"username": "carol", "role": "viewer"}, headers=bob
    )
    assert added.status_code == 200
    assert app_client.get(f"/api/projects/{pid}", headers=carol).json()["role"] == "viewer"
    assert (
        app_client.post(
            f"/api/projects/{pid}/classes", json={"name": "y"}, headers=carol
        ).status_code
        == 403
    )
    # Only owners manage members, and the last owner stays.
    assert (
        app_client.put(
            f"/api/projects/{pid}/members",
            json={"username": "carol", "role": "owner"},
            headers=carol,
        ).status_code
        == 403
    )
    assert app_client.delete(f"/api/projects/{pid}/members/bob", headers=bob).status_code == 409


def test_only_admins_create_users(app_client: TestClient) -> None:
    bob, alice = _token(app_client, "bob"), _token(app_client, "alice")
    body = {"username": "dave", "password": "dave-password"}
    assert app_client.post("/api/users", json=body, headers=bob).status_code == 403
    assert app_client.post("/api/users", json=body, headers=alice).status_code == 201
    assert app_client.post("/api/users", json=body, headers=alice).status_code == 409


def test_first_admin_is_created_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    with transaction(factory) as s:
        generated = ensure_admin(s, "")
    assert generated and len(generated) >= 12
    with transaction(factory) as s:
        assert ensure_admin(s, "") is None


def test_a_token_notes_its_last_use_to_the_minute(app_client: TestClient) -> None:
    """Both ways a token is checked (a user route; a project route, which reads the token
    with the project) note its last use, and write it again only after a minute."""
    headers = _token(app_client, "bob")
    project = app_client.post("/api/projects", json={"name": "bears"}, headers=headers)
    assert project.status_code == 201, project.text
    factory = app_client.app.state.session_factory  # type: ignore[attr-defined]

    def last_used() -> datetime:
        with transaction(factory) as s:
            (moment,) = s.scalars(select(ApiToken.last_used_at)).all()
        assert moment is not None
        return aware(moment)

    noted = last_used()
    assert utcnow() - noted < timedelta(seconds=30)
    for route in ("/api/users/me", f"/api/projects/{project.json()['id']}"):
        assert app_client.get(route, headers=headers).status_code == 200
        assert last_used() == noted  # within the minute: not written again
        with transaction(factory) as s:
            s.execute(update(ApiToken).values(last_used_at=noted - timedelta(minutes=2)))
        assert app_client.get(route, headers=headers).status_code == 200
        noted = last_used()
        assert utcnow() - noted < timedelta(seconds=30), route
