"""A change is committed before its response leaves: a client that heard 200 never finds the
state from before its change, and a failed commit is never answered with success."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.main import create_app
from core.db import transaction
from core.users import create_user
from tests.conftest import migrated


class Recorder:
    """Notes when the response starts, beside the session's commits."""

    def __init__(self, app: ASGIApp, events: list[str]) -> None:
        self.app, self.events = app, events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.events.append("response")
            await send(message)

        await self.app(scope, receive, noted)


def test_a_new_project_is_committed_before_the_answer_starts(tmp_path: Path) -> None:
    settings, factory = migrated(tmp_path, "k")
    with transaction(factory) as s:
        create_user(s, "ann", "ann-password")
    app = create_app(settings)
    events: list[str] = []

    def committed(session: Session) -> None:
        events.append("commit")

    event.listen(app.state.session_factory, "after_commit", committed)
    with TestClient(Recorder(app, events)) as client:
        login = {"username": "ann", "password": "ann-password", "name": "t"}
        token = client.post("/api/auth/tokens", json=login).json()["token"]
        events.clear()
        created = client.post(
            "/api/projects", json={"name": "p"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert created.status_code == 201
    assert events.index("commit") < events.index("response"), events
