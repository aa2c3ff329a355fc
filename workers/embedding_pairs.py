"""Near-duplicates by embedding: pairs of images whose penultimate features point the same way.

The perceptual hash catches copies of one file; the model's own features also catch the same
subject shot twice, crops and re-edits. Cosine similarity over L2-normalised features, one
block of rows against the rest at a time, so memory stays block x N and never N x N. Pairs
whose labels differ come first: the same picture cannot be both classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 1024


@dataclass(frozen=True)
class Pair:
    first: int  # row index, first < second
    second: int
    similarity: float
    cross_class: bool


def similar_pairs(
    features: np.ndarray, labels: np.ndarray, threshold: float, block: int = BLOCK
) -> list[Pair]:
    """Every pair with cosine similarity >= ``threshold``; cross-class first, then closest."""
    x = np.asarray(features, dtype=np.float32)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    pairs: list[Pair] = []
    for start in range(0, len(x), block):
        rows = x[start : start + block]
        # Only columns after each row: every pair once, never an image with itself.
        sims = rows @ x[start:].T
        i, j = np.nonzero(np.triu(sims, k=1) >= threshold)
        for a, b in zip(i.tolist(), j.tolist(), strict=True):
            first, second = start + a, start + b
            pairs.append(
                Pair(first, second, float(sims[a, b]), bool(labels[first] != labels[second]))
            )
    pairs.sort(key=lambda p: (not p.cross_class, -p.similarity, p.first, p.second))
    return pairs
