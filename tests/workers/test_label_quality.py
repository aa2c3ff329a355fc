"""Label-quality scores: planted wrong labels are flagged and score lowest, side by side."""

from __future__ import annotations

import numpy as np

from workers.label_quality import label_quality


def _planted(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), truth] = 0.9
    probs += rng.uniform(0, 0.05, probs.shape)
    probs /= probs.sum(1, keepdims=True)
    labels = truth.copy()
    wrong = rng.choice(300, 15, replace=False)
    labels[wrong] = (truth[wrong] + 1) % 3
    return probs, labels, wrong


def test_planted_wrong_labels_are_flagged_and_score_lowest_on_every_measure() -> None:
    probs, labels, wrong = _planted(0)
    quality = label_quality(probs, labels)
    assert set(np.flatnonzero(quality.issue)) == set(wrong)
    for scores in (quality.self_confidence, quality.margin, -quality.loss):
        assert set(np.argsort(scores)[: len(wrong)]) == set(wrong)
    np.testing.assert_allclose(quality.self_confidence, np.exp(-quality.loss))
    assert ((quality.margin >= 0) & (quality.margin <= 1)).all()


def test_a_class_with_no_labelled_image_left_still_gets_verdicts() -> None:
    probs, labels, _ = _planted(1)
    keep = labels != 2
    quality = label_quality(probs[keep], labels[keep])
    assert quality.issue.shape == (int(keep.sum()),)
    assert quality.issue.any()
