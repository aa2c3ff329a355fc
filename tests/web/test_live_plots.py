"""Plots in place: a model's curves poll while it trains and stop when it is done; the
confusion matrix is a heatmap by share of each actual class."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.db import transaction
from core.kinds import JobKindName
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.tables import Job, JobStatus, ModelVersion
from core.users import create_user
from tests.conftest import migrated

EPOCH = {"stage": "frozen", "train_loss": 0.9, "valid_loss": 0.8, "error_rate": 0.5}


@dataclass
class Training:
    client: TestClient
    factory: sessionmaker[Session]
    project_id: int
    job_id: int
    model_id: int


@pytest.fixture
def training(tmp_path: Path) -> Iterator[Training]:
    """A model halfway through training: its job runs, two epochs are recorded."""
    settings, factory = migrated(tmp_path, "k")
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s, ProjectIn(name="P", classes=[ClassIn(name="red"), ClassIn(name="blue")]), user.id
        )
        job = Job(project_id=project.id, kind=JobKindName.train, status=JobStatus.running)
        s.add(job)
        s.flush()
        version = ModelVersion(
            project_id=project.id,
            job_id=job.id,
            arch="resnet18",
            classes=["red", "blue"],
            metrics=[{**EPOCH, "epoch": n, "seconds": 1.0, "accuracy": 0.5} for n in range(2)],
        )
        s.add(version)
        s.flush()
        ids = (project.id, job.id, version.id)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/login", data={"username": "ann", "password": "ann-password"})
        assert answer.status_code == 200, answer.status_code
        yield Training(client, factory, *ids)


def _finish(t: Training) -> None:
    with transaction(t.factory) as s:
        job = s.get(Job, t.job_id)
        version = s.get(ModelVersion, t.model_id)
        assert job is not None and version is not None
        job.status = JobStatus.succeeded
        version.files = {"onnx": "models/x/model.onnx"}
        version.interpretation = {
            "classes": ["red", "blue"],
            "confusion_matrix": [[9, 1], [4, 6]],
            "most_confused": [],
            "per_class": [],
            "top_losses": [],
        }


def test_the_curves_of_a_training_model_poll_until_it_is_done(training: Training) -> None:
    t = training
    panel = t.client.get(f"/projects/{t.project_id}/jobs-panel").text
    assert "every 2s" in panel
    assert f"/models/{t.model_id}/losses.svg?epochs=2" in panel
    curves_url = f"/projects/{t.project_id}/models/{t.model_id}/curves"
    page = t.client.get(f"/projects/{t.project_id}/models/{t.model_id}").text
    assert f'hx-get="{curves_url}" hx-trigger="every 2s"' in page
    assert "training…" in page

    _finish(t)
    again = t.client.get(curves_url, headers={"HX-Request": "true"}).text
    assert "hx-trigger" not in again and "Training has finished" in again
    assert "every 2s" not in t.client.get(f"/projects/{t.project_id}/jobs-panel").text
    assert "hx-trigger" not in t.client.get(f"/projects/{t.project_id}/models/{t.model_id}").text


def test_the_confusion_matrix_is_shaded_by_share_of_the_actual_class(training: Training) -> None:
    _finish(training)
    page = training.client.get(f"/projects/{training.project_id}/models/{training.model_id}").text
    # red: 9 of 10 right (level 5 of 5), 1 wrong (1); blue: 6 of 10 right (3), 4 wrong (2).
    for cell in ("cm d5", "cm o1", "cm o2", "cm d3"):
        assert f'class="{cell}"' in page, cell
    assert 'title="4 of 10 blue predicted red"' in page
