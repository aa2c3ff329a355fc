"""Retrain and compare, for real: train on a set with planted wrong labels, fix them, retrain
with the same seed, and compare the two versions on the validation images they share."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.compare_load import load_comparison
from core.config import Settings
from core.db import transaction
from core.labels import Change, apply_change
from core.tables import (
    EventSource,
    Image,
    ImageClass,
    LabelAction,
    ModelVersion,
    ProjectMember,
    Role,
)
from core.users import create_user
from workers.runner import JobContext
from workers.train import train_job
from workers.training.data import in_validation, labelled_images

# Real training runs: seconds each.
pytestmark = pytest.mark.slow

SEED, VALID_PCT = 7, 0.3
PARAMS = {
    "pretrained": False,
    "image_size": 32,
    "batch_size": 8,
    "epochs": 1,
    "freeze_epochs": 0,
    "lr": 5e-3,
    "seed": SEED,
    "valid_pct": VALID_PCT,
}


def _plant_wrong_labels(factory: sessionmaker[Session], project_id: int) -> dict[int, int]:
    """Give two validation and two training images of each class the other class's label,
    as a careless import would (no label event). Returns {image id: its right class id}."""
    planted: dict[int, int] = {}
    with transaction(factory) as s:
        classes = s.scalars(
            select(ImageClass).where(ImageClass.project_id == project_id).order_by(ImageClass.id)
        ).all()
        # The split key: an image's near-duplicate group (workers/training/data.py).
        valid_ids = {
            row.image_id
            for row in labelled_images(s, project_id)
            if in_validation(SEED, row.group, VALID_PCT)
        }
        chosen = []
        for own, wrong in ((classes[0], classes[1]), (classes[1], classes[0])):
            rows = s.scalars(select(Image).where(Image.label_id == own.id).order_by(Image.id)).all()
            valid = [i for i in rows if i.id in valid_ids]
            train = [i for i in rows if i.id not in valid_ids]
            assert len(valid) >= 2 and len(train) >= 2
            chosen += [(image, own, wrong) for image in valid[:2] + train[:2]]
        for image, own, wrong in chosen:
            image.label_id = wrong.id
            planted[image.id] = own.id
    return planted


def _client(settings: Settings, factory: sessionmaker[Session], project_id: int) -> TestClient:
    with transaction(factory) as s:
        user = create_user(s, "vic", "vic-password")
        s.add(ProjectMember(project_id=project_id, user_id=user.id, role=Role.viewer))
    client = TestClient(create_app(settings))
    login = client.post("/api/auth/login", json={"username": "vic", "password": "vic-password"})
    assert login.status_code == 200, login.text
    return client


def test_retrain_after_cleaning_compares_on_the_same_validation_images(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    images(per_class=16)
    planted = _plant_wrong_labels(factory, project_id)
    first = train_job(job_context("train", PARAMS))["model_version_id"]

    with transaction(factory) as s:
        for image_id, right in planted.items():
            image = s.get(Image, image_id)
            assert image is not None
            apply_change(s, image, Change(LabelAction.relabel, right), None, EventSource.api)
    second = train_job(job_context("train", PARAMS))["model_version_id"]

    with transaction(factory) as s:
        a, b = s.get(ModelVersion, first), s.get(ModelVersion, second)
        assert a is not None and b is not None
        # Either order: the older is "before".
        c = load_comparison(s, b, a)
        assert a.validation is not None and b.validation is not None
        ids_a, ids_b = a.validation["image_ids"], b.validation["image_ids"]
        stored = {first: a.error_rate, second: b.error_rate}
        sizes = {first: a.num_valid, second: b.num_valid}
        names = {cls.id: cls.name for cls in s.scalars(select(ImageClass))}

    assert (c.before.id, c.after.id) == (first, second)
    # The same seed, nothing deleted: the same validation images.
    assert sorted(ids_a) == sorted(ids_b) == sorted(c.shared)
    assert c.only_before == [] and c.only_after == []
    in_valid = sorted(i for i in planted if i in ids_a)
    assert len(in_valid) == 4
    assert sorted(r.image_id for r in c.relabelled) == in_valid
    for row in c.relabelled:
        assert row.after == names[planted[row.image_id]] and row.before != row.after
    assert c.cleaned == len(planted)
    before, after = c.after_labels.before, c.after_labels.after
    assert before is not None and after is not None
    said = "cut" if after < before else "rose" if after > before else "did not change"
    assert f"leaning {len(planted)} images" in c.verdict and f" {said} " in c.verdict
    assert f"on the same {len(ids_a)} validation images." in c.verdict

    # Each version's error on its whole validation set, recomputed from its predictions,
    # is the one it stored; here the whole set is the shared one.
    for side in (c.before, c.after):
        assert side.num_valid == sizes[side.id]
        assert side.stored_error_rate == stored[side.id]
        assert side.recomputed_error_rate == pytest.approx(stored[side.id], rel=1e-6)
        assert side.error_rate_matches
    assert c.own_labels.before == pytest.approx(stored[first], rel=1e-6)
    assert c.own_labels.after == pytest.approx(stored[second], rel=1e-6)
    assert c.after_labels.after == c.own_labels.after
    assert sum(map(sum, c.confusion_before)) == len(c.shared)
    assert sum(r.count for r in c.per_class) == len(c.shared)

    # Over REST: the same comparison in either order, and the same stored errors.
    client = _client(settings, factory, project_id)
    base = f"/api/projects/{project_id}/models"
    for model_id, other_id in ((first, second), (second, first)):
        answer = client.get(f"{base}/{model_id}/compare/{other_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json() == c.model_dump(mode="json")
    for side in (c.before, c.after):
        assert client.get(f"{base}/{side.id}").json()["error_rate"] == side.stored_error_rate
    assert client.get(f"{base}/{first}/compare/123456").status_code == 404
    assert client.get(f"{base}/{first}/compare/{first}").status_code == 409

    # A version trained before validation predictions were kept: 409, retrain.
    with transaction(factory) as s:
        old = ModelVersion(project_id=project_id, arch="resnet18", files={"onnx": "models/x"})
        s.add(old)
        s.flush()
        old_id = old.id
    refused = client.get(f"{base}/{first}/compare/{old_id}")
    assert refused.status_code == 409 and "retrain" in refused.json()["detail"]

    # The pages: the model page offers the comparison, which renders.
    model_page = client.get(f"/projects/{project_id}/models/{second}").text
    assert f'action="/projects/{project_id}/models/{second}/compare"' in model_page
    assert f'<option value="{first}">' in model_page
    page = client.get(f"/projects/{project_id}/models/{second}/compare?other={first}")
    assert page.status_code == 200
    assert c.verdict in page.text
