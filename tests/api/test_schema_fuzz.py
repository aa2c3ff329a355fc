"""Schemathesis against the authenticated API on SQLite: inputs generated from the OpenAPI
schema, for every operation; no answer is a server error and every answer matches the
schema. Bounded: a few examples per operation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.main import create_app
from core.db import transaction
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.users import create_user
from tests.conftest import migrated

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, str]]:
    settings_, factory = migrated(tmp_path_factory.mktemp("fuzz"), "k")
    with transaction(factory) as s:
        user = create_user(s, "fuzz", "fuzz-password", is_admin=True)
        create_project(s, ProjectIn(name="p", classes=[ClassIn(name="a")]), user.id)
    app = create_app(settings_)
    with TestClient(app) as client:
        login = {"username": "fuzz", "password": "fuzz-password", "name": "t"}
        token = client.post("/api/auth/tokens", json=login).json()["token"]
    yield app, token


def test_no_server_error_and_every_answer_matches_the_schema(
    fuzzed: tuple[FastAPI, str],
) -> None:
    app, token = fuzzed
    # Logging out would end the token user's sessions mid-run; it is tested elsewhere.
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app).exclude(
        path="/api/auth/logout"
    )
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 40
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"},
                checks=[not_a_server_error, response_schema_conformance],
            )

        call()
