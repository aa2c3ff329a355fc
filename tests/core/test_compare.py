"""Comparing two model versions on the validation images they share, from hand-made
validation predictions, images and label events."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest

from core.compare import EventNow, ImageNow, NotComparable, compare
from core.compare_verdict import verdict
from core.tables import EventSource, ImageState, ModelVersion

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def float32(value: float) -> float:
    """As training stores an error rate: a float32 mean."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def version(
    model_id: int,
    created_at: datetime,
    classes: list[str],
    rows: list[tuple[int, str, str]],
    error_rate: float | None = None,
    seed: int = 42,
) -> ModelVersion:
    """A finished version whose validation set is ``rows``: (image id, actual, predicted)."""
    wrong = sum(actual != predicted for _, actual, predicted in rows)
    return ModelVersion(
        id=model_id,
        project_id=1,
        arch="resnet18",
        created_at=created_at,
        classes=classes,
        split_seed=seed,
        valid_pct=0.2,
        num_valid=len(rows),
        error_rate=float32(wrong / len(rows)) if error_rate is None else error_rate,
        files={"onnx": f"models/{model_id}/model.onnx"},
        validation={
            "image_ids": [i for i, _, _ in rows],
            "actual": [classes.index(a) for _, a, _ in rows],
            "predicted": [classes.index(p) for _, _, p in rows],
        },
    )


def image(
    image_id: int,
    state: ImageState,
    label: str | None,
    at: datetime = T0 - HOUR,
    reason: str | None = None,
) -> ImageNow:
    return ImageNow(image_id, state, label, reason, at)


def event(
    image_id: int,
    at: datetime,
    source: EventSource,
    old: tuple[str | None, ImageState],
    new: tuple[str | None, ImageState],
) -> EventNow:
    return EventNow(image_id, at, source, old[0], new[0], old[1].value, new[1].value)


OK = ImageState.ok
# Before: its labels, as it trained (image 4 still "black").
BEFORE = [
    (1, "grizzly", "grizzly"),
    (2, "grizzly", "black"),  # wrong, then fixed
    (3, "black", "black"),  # right, then broken
    (4, "black", "grizzly"),  # relabelled to grizzly: the old prediction was right
    (5, "teddy", "black"),  # wrong, then fixed
    (6, "teddy", "black"),  # wrong both times, another prediction after
    (7, "grizzly", "grizzly"),  # deleted in between
    (8, "black", "black"),  # rejected in between, restored after the retrain
    (9, "teddy", "teddy"),  # its class was removed: no longer labelled
]
# After: the retrain, with another order of classes.
AFTER = [
    (1, "grizzly", "grizzly"),
    (2, "grizzly", "grizzly"),
    (3, "black", "grizzly"),
    (4, "grizzly", "grizzly"),
    (5, "teddy", "teddy"),
    (6, "teddy", "grizzly"),
    (10, "black", "black"),  # added after the first training
]
IMAGES = {
    7: image(7, ImageState.deleted, "grizzly"),
    8: image(8, OK, "black", reason="duplicate"),  # the reason stays after a restore
    9: image(9, OK, None),
    10: image(10, OK, "black", at=T0 + 2 * HOUR),
}
EVENTS = [
    event(3, T0 - HOUR, EventSource.api, ("black", OK), ("black", OK)),  # before either
    event(4, T0 + HOUR, EventSource.ui, ("black", OK), ("grizzly", OK)),
    event(7, T0 + 2 * HOUR, EventSource.api, ("grizzly", OK), ("grizzly", ImageState.deleted)),
    event(8, T0 + 3 * HOUR, EventSource.verify, ("black", OK), ("black", ImageState.rejected)),
    event(2, T0 + 4 * HOUR, EventSource.bulk, ("grizzly", OK), ("grizzly", OK)),  # a keep
    event(4, T0 + 5 * HOUR, EventSource.ui, ("grizzly", OK), ("grizzly", OK)),
    # After the retrain: not counted, and image 8 was rejected when it trained.
    event(8, T0 + 30 * HOUR, EventSource.ui, ("black", ImageState.rejected), ("black", OK)),
    event(1, T0 + 31 * HOUR, EventSource.ui, ("grizzly", OK), ("black", OK)),
]


def pair() -> tuple[ModelVersion, ModelVersion]:
    before = version(3, T0, ["grizzly", "black", "teddy"], BEFORE)
    after = version(5, T0 + 24 * HOUR, ["black", "grizzly", "teddy"], [*AFTER])
    return before, after


def test_shared_left_out_and_relabelled() -> None:
    before, after = pair()
    c = compare(before, after, IMAGES, EVENTS)
    assert (c.before.id, c.after.id) == (3, 5)
    assert c.shared == [1, 2, 3, 4, 5, 6]
    assert [(r.image_id, r.reason) for r in c.only_before] == [
        (7, "deleted"),
        (8, "rejected"),
        (9, "unlabelled"),
    ]
    assert c.only_before[1].detail == "rejected (duplicate)"
    assert c.only_before[2].detail == "no longer labelled (was teddy)"
    assert [(r.image_id, r.reason) for r in c.only_after] == [(10, "added")]
    assert [(r.image_id, r.before, r.after) for r in c.relabelled] == [(4, "black", "grizzly")]
    # People changed images 4, 7 and 2 in between; the verifier's reject is not cleaning.
    assert c.cleaned == 3


def test_the_older_version_is_before_in_either_order() -> None:
    before, after = pair()
    assert compare(after, before, IMAGES, EVENTS) == compare(before, after, IMAGES, EVENTS)


def test_errors_both_ways_and_stored_errors() -> None:
    before, after = pair()
    c = compare(before, after, IMAGES, EVENTS)
    # Against the labels each trained with: before wrong on 2, 4, 5, 6; after on 3, 6.
    assert (c.own_labels.errors_before, c.own_labels.errors_after) == (4, 2)
    assert c.own_labels.before == pytest.approx(4 / 6)
    # Against the labels now, image 4's old prediction (grizzly) is right.
    assert (c.after_labels.errors_before, c.after_labels.errors_after) == (3, 2)
    assert c.after_labels.before == pytest.approx(3 / 6)
    assert c.after_labels.after == pytest.approx(2 / 6)
    # The whole validation sets: 4 of 9 wrong before, 2 of 7 after, as stored.
    assert (c.before.num_valid, c.after.num_valid) == (9, 7)
    assert c.before.recomputed_error_rate == pytest.approx(4 / 9)
    assert c.after.recomputed_error_rate == pytest.approx(2 / 7)
    assert c.before.stored_error_rate == float32(4 / 9)
    assert c.before.error_rate_matches and c.after.error_rate_matches
    off = version(5, T0 + 24 * HOUR, ["black", "grizzly", "teddy"], AFTER, error_rate=0.5)
    assert not compare(before, off, IMAGES, EVENTS).after.error_rate_matches


def test_per_class_and_confusion_matrices_by_class_name() -> None:
    before, after = pair()
    c = compare(before, after, IMAGES, EVENTS)
    # The union of classes, the older version's order first.
    assert c.classes == ["grizzly", "black", "teddy"]
    rows = {r.label: (r.count, r.errors_before, r.errors_after) for r in c.per_class}
    assert rows == {"grizzly": (3, 1, 0), "black": (1, 0, 1), "teddy": (2, 2, 1)}
    teddy = next(r for r in c.per_class if r.label == "teddy")
    assert (teddy.error_rate_before, teddy.error_rate_after) == (1.0, 0.5)
    # Rows: the label now; columns: predicted.
    assert c.confusion_before == [[2, 1, 0], [0, 1, 0], [0, 2, 0]]
    assert c.confusion_after == [[3, 0, 0], [1, 0, 0], [1, 0, 1]]
    assert sum(map(sum, c.confusion_after)) == len(c.shared)


def test_fixed_broken_and_still_wrong() -> None:
    before, after = pair()
    changed = compare(before, after, IMAGES, EVENTS).changed
    assert [(r.image_id, r.label, r.before, r.after) for r in changed.fixed] == [
        (2, "grizzly", "black", "grizzly"),
        (5, "teddy", "black", "teddy"),
    ]
    assert [(r.image_id, r.label, r.before, r.after) for r in changed.broken] == [
        (3, "black", "black", "grizzly")
    ]
    assert changed.still_wrong == 1


def test_verdict_in_plain_words() -> None:
    before, after = pair()
    c = compare(before, after, IMAGES, EVENTS)
    assert c.verdict == (
        "Cleaning 3 images cut the error from 50.0% to 33.3% on the same 6 validation images. "
        "Of those, 1 was relabelled; both versions are judged against the new labels. "
        "The versions validated on 9 and 7 images; only the 6 they share are compared."
    )
    assert verdict(143, 512, 0.079, 0.041, 512, 512, 0) == (
        "Cleaning 143 images cut the error from 7.9% to 4.1% on the same 512 validation images."
    )
    assert verdict(1, 512, 0.041, 0.079, 512, 512, 0) == (
        "After cleaning 1 image, the error rose from 4.1% to 7.9% on the same 512 validation "
        "images."
    )
    assert verdict(2, 10, 0.1, 0.1, 10, 12, 0) == (
        "After cleaning 2 images, the error did not change: 10.0% on the same 10 validation "
        "images. The versions validated on 10 and 12 images; only the 10 they share are "
        "compared."
    )
    assert verdict(0, 10, 0.2, 0.1, 10, 10, 0).startswith(
        "Retraining with nothing cleaned cut the error from 20.0% to 10.0%"
    )
    assert "share no validation image" in verdict(0, 0, None, None, 10, 10, 0)


def test_another_split_is_said_to_be_one() -> None:
    before = version(3, T0, ["a", "b"], [(1, "a", "a"), (2, "b", "b")], seed=1)
    after = version(4, T0 + HOUR, ["a", "b"], [(2, "b", "a"), (3, "a", "a")], seed=2)
    images = {n: image(n, OK, "a" if n != 2 else "b") for n in (1, 3)}
    c = compare(before, after, images, [])
    assert [(r.image_id, r.reason) for r in c.only_before] == [(1, "split")]
    assert [(r.image_id, r.reason) for r in c.only_after] == [(3, "split")]
    assert c.shared == [2] and c.changed.broken[0].image_id == 2
    assert c.verdict.startswith("With nothing cleaned, the error rose from 0.0% to 100.0%")


def test_versions_without_validation_or_export_cannot_be_compared() -> None:
    before, after = pair()
    old = version(2, T0 - HOUR, ["grizzly", "black", "teddy"], BEFORE)
    old.validation = None
    with pytest.raises(NotComparable, match="retrain"):
        compare(old, after, IMAGES, EVENTS)
    unfinished = version(6, T0 + 48 * HOUR, ["grizzly", "black"], [(1, "grizzly", "grizzly")])
    unfinished.files = {}
    with pytest.raises(NotComparable, match="no export"):
        compare(before, unfinished, IMAGES, EVENTS)
    elsewhere = version(7, T0 + 48 * HOUR, ["grizzly", "black"], [(1, "grizzly", "grizzly")])
    elsewhere.project_id = 2
    with pytest.raises(NotComparable, match="different projects"):
        compare(before, elsewhere, IMAGES, EVENTS)
