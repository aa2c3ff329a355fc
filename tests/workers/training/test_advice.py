"""The lesson's advice, each case provoked on purpose (real runs where they are reliable)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.tables import ModelVersion
from workers.runner import JobContext
from workers.train import train_job
from workers.training.advice import advise

# Real training runs, served processes: seconds each.
pytestmark = pytest.mark.slow

TINY = {"pretrained": False, "image_size": 32, "batch_size": 8, "augment": False}


def _codes(advice: list[dict[str, str]]) -> list[str]:
    for item in advice:
        assert item["message"] and item["next_step"]
    return [item["code"] for item in advice]


def _row(epoch: int, train: float | None, valid: float | None, error: float) -> dict[str, Any]:
    return {"epoch": epoch, "train_loss": train, "valid_loss": valid, "error_rate": error}


ENOUGH = {"a": 50, "b": 50}


def test_rules_on_histories() -> None:
    good = [_row(0, 1.0, 0.8, 0.4), _row(1, 0.5, 0.6, 0.2), _row(2, 0.3, 0.5, 0.1)]
    assert advise(good, 2, 1e-3, ENOUGH, 30) == []
    exploding = [_row(0, 1.0, 0.8, 0.4), _row(1, 3.0, 9.0, 0.6)]
    assert _codes(advise(exploding, 0, 1.0, ENOUGH, 30)) == ["lr_too_high"]
    nan = [_row(0, 1.0, 0.8, 0.4), _row(1, None, None, 0.5)]
    assert _codes(advise(nan, 0, 1.0, ENOUGH, 30)) == ["lr_too_high"]
    flat = [_row(0, 0.70, 0.69, 0.5), _row(1, 0.69, 0.69, 0.5), _row(2, 0.69, 0.68, 0.5)]
    assert _codes(advise(flat, 0, 1e-7, ENOUGH, 30)) == ["lr_too_low"]
    under = [_row(0, 1.2, 0.9, 0.4), _row(1, 0.8, 0.6, 0.3), _row(2, 0.6, 0.4, 0.2)]
    assert _codes(advise(under, 2, 1e-3, ENOUGH, 30)) == ["too_few_epochs"]
    over = [
        _row(0, 1.0, 0.8, 0.30),
        _row(1, 0.5, 0.5, 0.10),
        _row(2, 0.3, 0.6, 0.15),
        _row(3, 0.1, 0.9, 0.20),
    ]
    advice = advise(over, 1, 1e-3, ENOUGH, 30)
    assert _codes(advice) == ["too_many_epochs"]
    assert "(1)" in advice[0]["message"]
    assert _codes(advise(good, 2, 1e-3, {"a": 50, "b": 4}, 30)) == ["not_enough_data"]
    assert _codes(advise(good, 2, 1e-3, ENOUGH, 3)) == ["not_enough_data"]


def _train(ctx: JobContext, factory: sessionmaker[Session]) -> tuple[dict[str, Any], ModelVersion]:
    result = train_job(ctx)
    with transaction(factory) as s:
        version = s.get(ModelVersion, result["model_version_id"])
        assert version is not None
        return result, version


def test_too_high_learning_rate_is_named(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    images(per_class=12)
    params = {**TINY, "lr": 50.0, "epochs": 2, "freeze_epochs": 1}
    result, version = _train(job_context("train", params), factory)
    assert "lr_too_high" in result["advice"]
    assert "lr_too_high" in _codes(version.advice)


def test_too_low_learning_rate_and_too_little_data_are_named(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    images(per_class=12)
    params = {**TINY, "lr": 1e-8, "epochs": 2, "freeze_epochs": 1}
    _, version = _train(job_context("train", params), factory)
    codes = _codes(version.advice)
    assert "lr_too_low" in codes
    # 12 images per class: fewer than the lesson's minimum for a trustworthy model.
    assert "not_enough_data" in codes


def test_missing_pretrained_weights_say_random_initialisation(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    images(per_class=8)
    params = {**TINY, "pretrained": True, "lr": 1e-3, "epochs": 0, "freeze_epochs": 1}
    result, version = _train(job_context("train", params), factory)
    # No internet here: torchvision's download fails at once and the job says so.
    assert result["weights"] == "random"
    assert "random initialisation" in result["note"]
    assert "random_init" in _codes(version.advice)
