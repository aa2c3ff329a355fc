"""The train job end to end on tiny images, then the rank job on its model."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.db import transaction
from api.models import ImageScore, ModelVersion
from workers.rank import rank_job
from workers.runner import JobContext
from workers.train import train_job

TINY = {"arch": "resnet18", "pretrained": False, "image_size": 32, "batch_size": 8}


def test_train_then_rank(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    ids = images(per_class=12)
    result = train_job(job_context("train", {**TINY, "epochs": 2, "freeze_epochs": 1, "lr": 1e-2}))
    with transaction(factory) as s:
        version = s.get(ModelVersion, result["model_version_id"])
        assert version is not None
        assert [m["stage"] for m in version.metrics] == ["frozen", "unfrozen", "unfrozen"]
        assert set(version.files) == {"weights", "metadata", "onnx"}
    ranked = rank_job(job_context("rank", {"out_of_fold": True, "folds": 3}))
    assert ranked["in_sample"] == len(ids)
    with transaction(factory) as s:
        methods = s.scalars(select(ImageScore.method)).all()
    assert sorted(set(methods)) == ["in_sample", "out_of_fold"]
    assert len(methods) == 2 * len(ids)
