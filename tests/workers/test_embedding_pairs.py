"""Near-duplicate pairs by embedding: computed in blocks, equal to the brute-force answer."""

from __future__ import annotations

import numpy as np

from workers.embedding_pairs import similar_pairs


def _brute_force(features: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = x @ x.T
    return {(i, j) for i in range(len(x)) for j in range(i + 1, len(x)) if sims[i, j] >= threshold}


def test_pairs_computed_in_blocks_equal_the_brute_force_answer() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    # Near copies of a few images, some of them under another label.
    features = np.vstack([base, base[:8] + rng.normal(scale=0.05, size=(8, 16))])
    labels = np.concatenate([rng.integers(0, 3, 40), rng.integers(0, 3, 8)])
    expected = _brute_force(features, 0.95)
    assert len(expected) >= 8
    for block in (1, 7, 48, 1000):
        pairs = similar_pairs(features, labels, 0.95, block=block)
        assert {(p.first, p.second) for p in pairs} == expected


def test_pairs_across_classes_come_first_then_the_closest() -> None:
    features = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.02, 1.0]])
    labels = np.array([0, 0, 1, 0])
    pairs = similar_pairs(features, labels, 0.99, block=2)
    assert [(p.first, p.second, p.cross_class) for p in pairs] == [(2, 3, True), (0, 1, False)]
    assert pairs[1].similarity > pairs[0].similarity
