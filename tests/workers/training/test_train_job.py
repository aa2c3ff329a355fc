"""The train job: two stages with metrics per epoch visible while it runs, cancel, results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.tables import Job, JobStatus, ModelVersion
from workers.runner import JobCancelled, JobContext
from workers.train import train_job

# Real training runs, served processes: seconds each.
pytestmark = pytest.mark.slow

TINY = {"pretrained": False, "image_size": 32, "batch_size": 8}


def test_two_stage_fine_tune_stores_metrics_while_running(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    images(per_class=16)
    ctx = job_context("train", {**TINY, "epochs": 2, "freeze_epochs": 1, "lr": 5e-3})
    seen: list[int] = []
    report = ctx.report

    def watching(done: int, total: int, message: str = "", force: bool = False) -> None:
        # What another process (the API) sees of the model version during training.
        with transaction(factory) as s:
            version = s.scalar(select(ModelVersion).where(ModelVersion.job_id == ctx.job_id))
            if version is not None:
                seen.append(len(version.metrics))
        report(done, total, message, force)

    ctx.report = watching  # type: ignore[method-assign]
    result = train_job(ctx)
    assert {1, 2} <= set(seen), "metrics of finished epochs are visible while training runs"
    with transaction(factory) as s:
        version = s.get(ModelVersion, result["model_version_id"])
        assert version is not None
        metrics = version.metrics
        assert [m["stage"] for m in metrics] == ["frozen", "unfrozen", "unfrozen"]
        assert [m["epoch"] for m in metrics] == [0, 1, 2]
        for row in metrics:
            assert set(row) == {
                "epoch", "stage", "train_loss", "valid_loss", "error_rate", "accuracy", "seconds"
            }  # fmt: skip
            assert row["accuracy"] == pytest.approx(1 - row["error_rate"])
        best = version.best_epoch
        assert best is not None
        assert version.error_rate == min(m["error_rate"] for m in metrics)
        assert version.error_rate == metrics[best]["error_rate"]
        assert version.classes == ["grizzly", "black"]
        assert version.status == "ready"
        assert version.num_train + version.num_valid == 32
        assert version.params["lr"] == 5e-3
        interpretation = version.interpretation
        assert interpretation is not None
        matrix = interpretation["confusion_matrix"]
        assert sum(map(sum, matrix)) == version.num_valid
        assert len(interpretation["per_class"]) == 2
        top = interpretation["top_losses"]
        assert top and top == sorted(top, key=lambda r: -r["loss"])
        assert {"image_id", "actual", "predicted", "loss", "probability", "gradcam"} <= set(top[0])
    assert result["device"] == "cpu"
    assert result["images_per_second"] > 0


def test_without_lr_the_finder_picks_one(
    images: Callable[..., list[int]], job_context: Callable[..., JobContext]
) -> None:
    images(per_class=10)
    result = train_job(job_context("train", {**TINY, "epochs": 1, "freeze_epochs": 1}))
    assert result["lr_suggestions"]["valley"] == result["lr"]
    assert 1e-7 < result["lr"] < 10


def test_cancel_stops_within_one_batch(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    images(per_class=24)
    ctx = job_context(
        "train", {**TINY, "batch_size": 4, "epochs": 3, "freeze_epochs": 0, "lr": 1e-3}
    )
    ctx.report_interval = 0.0
    calls: list[tuple[int, int]] = []
    report = ctx.report

    def cancelling(done: int, total: int, message: str = "", force: bool = False) -> None:
        calls.append((done, total))
        if message == "training" and done == 3:
            with transaction(factory) as s:
                s.execute(update(Job).where(Job.id == ctx.job_id).values(cancel_requested=True))
        report(done, total, message, force)

    ctx.report = cancelling  # type: ignore[method-assign]
    with pytest.raises(JobCancelled):
        train_job(ctx)
    # The report of batch 3 saw the request and raised: no further batch ran.
    assert calls[-1][0] == 3
    with transaction(factory) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.job_id == ctx.job_id))
        assert version is not None and not version.files and version.status == "training"
        # What the runner records when the job raises JobCancelled.
        s.execute(update(Job).where(Job.id == ctx.job_id).values(status=JobStatus.cancelled))
    with transaction(factory) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.job_id == ctx.job_id))
        assert version is not None and version.status == "cancelled"


def test_too_few_images_fail_plainly(
    images: Callable[..., list[int]], job_context: Callable[..., JobContext]
) -> None:
    images(per_class=3, classes=("only",))
    with pytest.raises(ValueError, match="at least two classes"):
        train_job(job_context("train", TINY))


def test_rerun_of_the_same_job_reuses_its_model_version(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    images(per_class=8)
    ctx = job_context("train", {**TINY, "epochs": 0, "freeze_epochs": 1, "lr": 1e-3})
    first: dict[str, Any] = train_job(ctx)
    second = train_job(ctx)
    assert first["model_version_id"] == second["model_version_id"]
    with transaction(factory) as s:
        version = s.get(ModelVersion, first["model_version_id"])
        assert version is not None and len(version.metrics) == 1
