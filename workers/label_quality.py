"""Label-quality scores from one matrix of class probabilities, side by side.

The loss is the lesson's top-losses order. Self-confidence (the label's probability) and
the normalised margin (label probability minus the best other class, mapped to 0..1) are
cleanlab's label-quality scores, and confident learning flags an image when another class
clears that class's own threshold (the mean probability the model gives it on images
labelled with it), so a class the model is shy about is not drowned by a confident one.
cleanlab is a well-kept implementation of exactly these, so it is called rather than
rewritten; it runs on whatever probabilities the rank job gives it (in sample or out of fold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores


@dataclass(frozen=True)
class LabelQuality:
    loss: np.ndarray
    self_confidence: np.ndarray
    margin: np.ndarray
    issue: np.ndarray  # bool; None-free: every image gets a verdict
    predicted: np.ndarray
    probability: np.ndarray


def label_quality(probs: np.ndarray, labels: np.ndarray) -> LabelQuality:
    """Every score for images with these probabilities (rows sum to 1) and given labels."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    rows = np.arange(len(labels))
    loss = -np.log(np.clip(probs[rows, labels], 1e-12, 1.0))
    self_confidence = get_label_quality_scores(labels, probs, method="self_confidence")
    margin = get_label_quality_scores(labels, probs, method="normalized_margin")
    return LabelQuality(
        loss=loss,
        self_confidence=np.asarray(self_confidence, dtype=np.float64),
        margin=np.asarray(margin, dtype=np.float64),
        issue=issues(probs, labels),
        predicted=probs.argmax(1),
        probability=probs.max(1),
    )


def issues(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Confident learning's verdict per image (True: the label looks wrong)."""
    # Confident learning needs every class of the matrix among the labels and at least two;
    # a model's class with no labelled image left (all cleaned away) gets no verdict from it.
    present = np.unique(labels)
    if len(present) < 2:
        return np.zeros(len(labels), dtype=bool)
    if len(present) < probs.shape[1]:
        sub = probs[:, present]
        sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None)
        remap = np.searchsorted(present, labels)
        return np.asarray(find_label_issues(remap, sub, n_jobs=1), dtype=bool)
    return np.asarray(find_label_issues(labels, probs, n_jobs=1), dtype=bool)
