"""Admins manage accounts over REST: create, disable, enable, make admin, reset a password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.db import transaction
from core.users import create_user
from tests.conftest import migrated


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings, factory = migrated(tmp_path, "s3cret")
    with transaction(factory) as s:
        create_user(s, "root", "root-password", is_admin=True)
        create_user(s, "bob", "bob-password")
    with TestClient(create_app(settings)) as client:
        yield client


def _login(client: TestClient, username: str, password: str) -> TestClient:
    """A client of its own with a session cookie and the CSRF header pages send."""
    fresh = TestClient(client.app)
    answer = fresh.post("/api/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    signer = fresh.app.state.signer  # type: ignore[attr-defined]
    fresh.headers["X-CSRF-Token"] = signer.csrf_token(fresh.cookies["winnow_session"])
    return fresh


def _id(admin: TestClient, username: str) -> int:
    return next(u["id"] for u in admin.get("/api/users").json() if u["username"] == username)


def test_a_disabled_account_loses_its_session_and_its_token_until_enabled(
    client: TestClient,
) -> None:
    admin = _login(client, "root", "root-password")
    bob = _login(client, "bob", "bob-password")
    token = bob.post("/api/users/me/tokens", json={"name": "t"}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    bob_id = _id(admin, "bob")

    off = admin.patch(f"/api/users/{bob_id}", json={"is_active": False})
    assert off.status_code == 200 and off.json()["is_active"] is False
    assert bob.get("/api/users/me").status_code in (401, 403)
    assert client.get("/api/users/me", headers=bearer).status_code == 403
    refused = client.post("/api/auth/login", json={"username": "bob", "password": "bob-password"})
    assert refused.status_code == 401

    assert admin.patch(f"/api/users/{bob_id}", json={"is_active": True}).status_code == 200
    assert client.get("/api/users/me", headers=bearer).json()["username"] == "bob"


def test_a_new_password_ends_the_users_sessions_and_the_old_password(client: TestClient) -> None:
    admin = _login(client, "root", "root-password")
    bob = _login(client, "bob", "bob-password")
    reset = admin.patch(f"/api/users/{_id(admin, 'bob')}", json={"password": "fresh-password"})
    assert reset.status_code == 200
    assert bob.get("/api/users/me").status_code == 401
    old = client.post("/api/auth/login", json={"username": "bob", "password": "bob-password"})
    assert old.status_code == 401
    assert _login(client, "bob", "fresh-password").get("/api/users/me").status_code == 200
    short = admin.patch(f"/api/users/{_id(admin, 'bob')}", json={"password": "short"})
    assert short.status_code == 422


def test_only_admins_manage_users_and_one_active_admin_always_remains(
    client: TestClient,
) -> None:
    admin = _login(client, "root", "root-password")
    bob = _login(client, "bob", "bob-password")
    root_id, bob_id = _id(admin, "root"), _id(admin, "bob")
    assert bob.patch(f"/api/users/{root_id}", json={"is_active": False}).status_code == 403
    carol = {"username": "carol", "password": "carol-password"}
    assert bob.post("/api/users", json=carol).status_code == 403
    assert bob.get("/admin/users").status_code == 403

    assert admin.patch(f"/api/users/{root_id}", json={"is_active": False}).status_code == 409
    assert admin.patch(f"/api/users/{root_id}", json={"is_admin": False}).status_code == 409
    assert admin.patch("/api/users/999", json={"is_active": False}).status_code == 404

    made = admin.post("/api/users", json=carol)
    assert made.status_code == 201
    promoted = admin.patch(f"/api/users/{bob_id}", json={"is_admin": True})
    assert promoted.json()["is_admin"] is True
    # Now bob, an admin too, may demote root; root can no longer reach the admin routes.
    assert bob.patch(f"/api/users/{root_id}", json={"is_admin": False}).status_code == 200
    assert admin.get("/api/users").status_code == 403
    page = bob.get("/admin/users")
    assert page.status_code == 200 and "carol" in page.text and "data-user-active" in page.text
