"""Logins that cannot be guessed at speed, forged from elsewhere, or outlive a logout; tokens
that expire."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.columns import utcnow
from core.db import transaction
from core.security import token_digest
from core.tables import ApiToken, User
from core.users import create_user
from tests.conftest import migrated
from tests.scored import api_token, scored_project


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, sessionmaker[Session]]]:
    settings, factory = migrated(tmp_path, "k")
    settings = settings.model_copy(
        update={"login_limit_per_user": "3/2seconds", "login_limit_per_address": "20/2seconds"}
    )
    with transaction(factory) as s:
        create_user(s, "ann", "ann-password")
        off = create_user(s, "off", "off-password")
        off.is_active = False
    with TestClient(create_app(settings)) as client:
        yield client, factory


def _login(client: TestClient, user: str, password: str, **headers: str) -> int:
    body = {"username": user, "password": password}
    return client.post("/api/auth/login", json=body, headers=headers).status_code


def test_failed_logins_are_throttled_then_allowed_after_the_window(
    app: tuple[TestClient, sessionmaker[Session]],
) -> None:
    client, _ = app
    assert [_login(client, "ann", "guess") for _ in range(3)] == [401, 401, 401]
    refused = client.post("/api/auth/login", json={"username": "ann", "password": "ann-password"})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    # The same throttle guards tokens made from a password and the login form.
    token = {"username": "ann", "password": "ann-password", "name": "t"}
    assert client.post("/api/auth/tokens", json=token).status_code == 429
    form = client.post("/login", data={"username": "ann", "password": "ann-password"})
    assert "too many failed logins" in form.text
    time.sleep(2.1)
    assert _login(client, "ann", "ann-password") == 200


def test_a_disabled_account_takes_as_long_as_a_wrong_password(
    app: tuple[TestClient, sessionmaker[Session]],
) -> None:
    client, _ = app

    def seconds(user: str, password: str) -> float:
        started = time.perf_counter()
        assert _login(client, user, password) == 401
        return time.perf_counter() - started

    wrong = min(seconds("ann", f"wrong-{n}") for n in range(2))
    disabled = min(seconds("off", "off-password") for _ in range(3))
    # Both verify one argon2 hash (tens of ms); without it the disabled answer came back in
    # about a millisecond. The margin leaves room for a busy machine.
    assert disabled > 0.3 * wrong


def test_a_login_posted_from_another_site_is_refused(
    app: tuple[TestClient, sessionmaker[Session]],
) -> None:
    client, _ = app
    assert _login(client, "ann", "ann-password", origin="https://evil.example") == 403
    assert _login(client, "ann", "ann-password", **{"sec-fetch-site": "cross-site"}) == 403
    assert _login(client, "ann", "ann-password", origin="http://testserver") == 200


def test_logout_ends_the_session_on_the_server(
    app: tuple[TestClient, sessionmaker[Session]],
) -> None:
    client, _ = app
    assert _login(client, "ann", "ann-password") == 200
    stolen = client.cookies["winnow_session"]
    csrf = client.app.state.signer.csrf_token(stolen)  # type: ignore[attr-defined]
    assert client.get("/api/users/me").status_code == 200
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    replay = TestClient(client.app, cookies={"winnow_session": stolen})
    assert replay.get("/api/users/me").status_code == 401


def test_a_token_stops_working_when_it_expires(
    app: tuple[TestClient, sessionmaker[Session]],
) -> None:
    client, factory = app
    body = {"username": "ann", "password": "ann-password", "name": "ci", "expires_in_days": 1}
    created = client.post("/api/auth/tokens", json=body).json()
    assert created["expires_at"] is not None
    auth = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/users/me", headers=auth).status_code == 200
    with transaction(factory) as s:
        s.execute(
            update(ApiToken)
            .where(ApiToken.id == created["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert client.get("/api/users/me", headers=auth).status_code == 401


@pytest.mark.parametrize(
    ("next_page", "lands_on"),
    [
        ("/projects/3/review", "/projects/3/review"),
        ("//evil.example/x", "/"),
        ("/\\evil.example/x", "/"),
        ("/\t/evil.example/x", "/"),
        ("https://evil.example/", "/"),
    ],
)
def test_the_login_form_sends_people_only_to_pages_of_this_site(
    app: tuple[TestClient, sessionmaker[Session]], next_page: str, lands_on: str
) -> None:
    client, _ = app
    form = {"username": "ann", "password": "ann-password", "next": next_page}
    response = client.post("/login", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == lands_on


def test_a_token_on_a_project_route_gets_the_answers_of_the_two_checks(tmp_path: Path) -> None:
    """A project route called with a token reads the token, its user and the membership in
    one statement; the answers are those of authentication then access: 401 for a token
    that is unknown, malformed or expired (whatever the project), 403 for a disabled
    account, 404 for a project that is absent or not the caller's, 200 for a member or
    an admin."""
    settings, factory = migrated(tmp_path, "k")
    with transaction(factory) as s:
        seeded = scored_project(s, ["a", "b"], 3, loss=float, editors=["eve"])
        pid, tokens = seeded.project.id, dict(seeded.tokens)
        for name, admin in (("mallory", False), ("root", True), ("gone", False)):
            user = create_user(s, name, f"{name}-password", is_admin=admin)
            tokens[name] = api_token(s, user)
            user.is_active = name != "gone"
        s.add(
            ApiToken(
                user_id=s.scalars(select(User).where(User.username == "owner")).one().id,
                name="old",
                token_hash=token_digest("expired-token"),
                prefix="e",
                expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        tokens["expired"] = "expired-token"
    with TestClient(create_app(settings)) as client:

        def status(token: str, project: int = pid, scheme: str = "Bearer") -> int:
            headers = {"Authorization": f"{scheme} {token}"}
            return client.get(f"/api/projects/{project}/images", headers=headers).status_code

        assert status(tokens["owner"]) == status(tokens["eve"]) == status(tokens["root"]) == 200
        assert status(tokens["mallory"]) == status(tokens["owner"], project=pid + 99) == 404
        assert status(tokens["gone"]) == 403
        assert status("no-such-token") == status("no-such-token", project=pid + 99) == 401
        assert status(tokens["owner"], scheme="Basic") == 401
        assert status(tokens["expired"]) == status(tokens["expired"], project=pid + 99) == 401
        # The relabel takes the same path.
        first = client.get(
            f"/api/projects/{pid}/images", headers={"Authorization": f"Bearer {tokens['eve']}"}
        ).json()["items"][0]
        patch = {"version": first["version"], "label": "b"}
        url = f"/api/projects/{pid}/images/{first['id']}"
        assert (
            client.patch(url, json=patch, headers={"Authorization": "Bearer x"}).status_code == 401
        )
        mallory = {"Authorization": f"Bearer {tokens['mallory']}"}
        assert client.patch(url, json=patch, headers=mallory).status_code == 404
        eve = {"Authorization": f"Bearer {tokens['eve']}"}
        assert client.patch(url, json=patch, headers=eve).status_code == 200
