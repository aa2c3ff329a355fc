"""The compare page: two versions of a project on the validation images they share, reached
from each model page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.db import transaction
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.tables import ModelVersion
from core.users import create_user
from tests.conftest import migrated

SNEAKY = "<b>bear</b>"


@dataclass
class Site:
    client: TestClient
    project_id: int
    before: int
    after: int
    old: int


def _version(project_id: int, at: datetime, rows: list[tuple[int, int, int]]) -> ModelVersion:
    wrong = sum(a != p for _, a, p in rows)
    return ModelVersion(
        project_id=project_id,
        arch="resnet18",
        classes=["red", SNEAKY],
        created_at=at,
        num_valid=len(rows),
        error_rate=wrong / len(rows),
        files={"onnx": "models/x/model.onnx"},
        validation={
            "image_ids": [i for i, _, _ in rows],
            "actual": [a for _, a, _ in rows],
            "predicted": [p for _, _, p in rows],
        },
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings, factory = migrated(tmp_path, "k")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s, ProjectIn(name="P", classes=[ClassIn(name="red"), ClassIn(name=SNEAKY)]), user.id
        )
        # Image 101 fixed, 102 broken, 103 right both times, 104 only in the older one.
        before = _version(project.id, start, [(101, 0, 1), (102, 1, 1), (103, 0, 0), (104, 1, 1)])
        after = _version(
            project.id, start + timedelta(days=1), [(101, 0, 0), (102, 1, 0), (103, 0, 0)]
        )
        old = ModelVersion(
            project_id=project.id, arch="resnet18", files={"onnx": "models/y/model.onnx"}
        )
        s.add_all([before, after, old])
        s.flush()
        ids = (project.id, before.id, after.id, old.id)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/login", data={"username": "ann", "password": "ann-password"})
        assert answer.status_code == 200
        yield Site(client, *ids)


def test_the_model_page_offers_the_other_finished_versions(site: Site) -> None:
    page = site.client.get(f"/projects/{site.project_id}/models/{site.after}").text
    assert f'action="/projects/{site.project_id}/models/{site.after}/compare"' in page
    assert f'<option value="{site.before}">' in page
    assert f'<option value="{site.old}">' in page
    assert f'<option value="{site.after}">' not in page


def test_the_compare_page_shows_verdict_errors_matrices_and_thumbnails(site: Site) -> None:
    # Named newest first: the older version is still "before".
    url = f"/projects/{site.project_id}/models/{site.after}/compare?other={site.before}"
    response = site.client.get(url)
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert (
        "With nothing cleaned, the error did not change: 33.3% on the same 3 validation "
        "images. The versions validated on 4 and 3 images; only the 3 they share are compared."
    ) in page
    assert f"Model {site.before} → model {site.after}" in page
    assert page.count('<table class="list confusion">') == 2
    assert 'title="1 of 2 red (label now) predicted &lt;b&gt;bear&lt;/b&gt;"' in page
    assert SNEAKY not in page  # escaped everywhere
    thumbs = f"/api/projects/{site.project_id}/images/"
    fixed = page.split('class="card changed-fixed"')[1].split("</section>")[0]
    broken = page.split('class="card changed-broken"')[1].split("</section>")[0]
    assert f'src="{thumbs}101/file?variant=thumb"' in fixed
    assert f'src="{thumbs}102/file?variant=thumb"' in broken
    only_before = page.split('class="card only-before"')[1].split("</section>")[0]
    assert f"{thumbs}104" in only_before and "no longer in the project" in only_before


def test_a_version_without_validation_predictions_says_retrain(site: Site) -> None:
    url = f"/projects/{site.project_id}/models/{site.after}/compare?other={site.old}"
    response = site.client.get(url)
    assert response.status_code == 409
    assert "retrain it" in response.text
    api = f"/api/projects/{site.project_id}/models/{site.after}/compare/{site.old}"
    assert site.client.get(api).status_code == 409
    missing = f"/projects/{site.project_id}/models/{site.after}/compare?other=987654"
    assert site.client.get(missing).status_code == 404
