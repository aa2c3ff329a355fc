"""k-fold probabilities, pruned: each later round trains without the round before's flags.

The fold trainings are replaced by a stand-in that records what each fold model trained on
and answers fixed probabilities, so the orchestration is checked in milliseconds; the real
fine-tunes run in test_rank.py and bench/label_errors.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import workers.cross_validation as cv
from core.params import TrainParams
from workers.runner import JobContext
from workers.training.data import DataSplit, Sample

RECIPE = TrainParams(pretrained=False, image_size=16, epochs=1, freeze_epochs=0, lr=1e-3)


def _samples(tmp_path: Path, count: int) -> list[Sample]:
    samples = []
    for i in range(count):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (16, 16), (i, 0, 0)).save(path)
        samples.append(Sample(i + 1, f"{i:064x}", i % 2, path))
    return samples


Seen = list[tuple[str, set[int], set[int], int]]


def _fake_folds(monkeypatch: pytest.MonkeyPatch, wrong: int) -> Seen:
    """Every fold model says each image is its label's class (0.9; 0.7 in round 3), except
    image ``wrong``, which looks like the other class; records (round and fold, trained ids,
    held-out ids, the recipe's seed)."""
    seen: Seen = []

    def fold(_ctx: Any, recipe: TrainParams, split: DataSplit, *_args: Any) -> np.ndarray:
        name = _args[-1]
        trained, held = {s.image_id for s in split.train}, {s.image_id for s in split.valid}
        seen.append((name, trained, held, recipe.seed))
        sure = 0.7 if name.startswith("round 3") else 0.9
        probs = np.full((len(split.valid), 2), 1 - sure)
        for row, s in enumerate(split.valid):
            probs[row, 1 - s.label if s.image_id == wrong else s.label] = sure
        return probs

    monkeypatch.setattr(cv, "_fold", fold)
    return seen


def test_later_rounds_train_without_the_flagged_images_score_all_and_are_averaged(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job_context: Callable[..., JobContext],
) -> None:
    samples = _samples(tmp_path, 40)
    wrong = samples[7].image_id
    seen = _fake_folds(monkeypatch, wrong)
    found = cv.cross_validated_probs(
        job_context("rank"), RECIPE, ["a", "b"], samples, 4, cv.torch.device("cpu")
    )
    assert found.pruned == 1
    first = [s for s in seen if s[0].startswith("round 1, ")]
    second = [s for s in seen if s[0].startswith(("round 2, ", "round 3, "))]
    assert len(first) == 4 and len(second) == 8 and len(seen) == 12
    everyone = {s.image_id for s in samples}
    for name, trained, held, _ in seen:
        # No fold model trains on an image it scores.
        assert not trained & held, name
    # Round 1 trains on all the other folds; round 2 on all of them but the flagged image.
    assert all(trained | held == everyone for _, trained, held, _ in first)
    for _, trained, held, _ in second:
        assert trained | held == (everyone if wrong in held else everyone - {wrong})
    assert all(wrong not in trained for _, trained, _, _ in second)
    assert any(wrong in trained for _, trained, _, _ in first)
    # Every round scores every image once, each with folds and a seed of its own.
    partitions = []
    for number in (1, 2, 3):
        rounds = [s for s in seen if s[0].startswith(f"round {number}, ")]
        held_out = [h for _, _, h, _ in rounds]
        assert sorted(i for h in held_out for i in h) == sorted(everyone)
        assert {seed for *_, seed in rounds} == {RECIPE.seed + number - 1}
        partitions.append({frozenset(h) for h in held_out})
    assert partitions[0] != partitions[1] != partitions[2] != partitions[0]
    # The flagged image is still scored, and stays the one that looks wrong; the ranking is
    # the mean of rounds 2 (0.9) and 3 (0.7).
    labels = np.array([s.label for s in samples])
    confidence = found.probs[np.arange(len(samples)), labels]
    assert int(np.argmin(confidence)) == 7
    np.testing.assert_allclose(np.delete(confidence, 7), 0.8)
    np.testing.assert_allclose(confidence[7], 0.2)


def test_one_round_without_pruning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job_context: Callable[..., JobContext],
) -> None:
    samples = _samples(tmp_path, 20)
    seen = _fake_folds(monkeypatch, samples[3].image_id)
    found = cv.cross_validated_probs(
        job_context("rank"), RECIPE, ["a", "b"], samples, 4, cv.torch.device("cpu"), rounds=1
    )
    assert found.pruned is None
    assert [name for name, *_ in seen] == [f"fold {k}/4" for k in range(1, 5)]
    assert {seed for *_, seed in seen} == {RECIPE.seed}


def test_pruning_that_would_empty_a_class_from_a_fold_keeps_the_first_round(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job_context: Callable[..., JobContext],
) -> None:
    # Two images of class 1 only, both looking wrong: pruning them leaves one class.
    samples = _samples(tmp_path, 12)
    samples = [Sample(s.image_id, s.sha256, 0, s.path) for s in samples]
    samples[0] = Sample(1, samples[0].sha256, 1, samples[0].path)
    samples[1] = Sample(2, samples[1].sha256, 1, samples[1].path)
    seen: list[str] = []

    def fold(_ctx: Any, _recipe: Any, split: DataSplit, *args: Any) -> np.ndarray:
        seen.append(args[-1])
        probs = np.zeros((len(split.valid), 2))
        probs[:, 0] = 0.95
        probs[:, 1] = 0.05
        return probs

    monkeypatch.setattr(cv, "_fold", fold)
    found = cv.cross_validated_probs(
        job_context("rank"), RECIPE, ["a", "b"], samples, 2, cv.torch.device("cpu")
    )
    assert found.pruned == 0
    assert all(name.startswith("round 1, ") for name in seen)
