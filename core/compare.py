"""Retrain and compare: two model versions of a project on the validation images they share.

The split is a hash of (seed, image), so a retrain with the same seed validates on the same
images, less those cleaned away. ``compare`` is pure: it reads the two versions' stored
validation predictions (ModelVersion.validation), the images as they are now and the label
events since the older version; ``load_comparison`` gathers those from the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.columns import aware
from core.compare_verdict import verdict
from core.images import HUMAN_SOURCES
from core.model_version_schemas import (
    Changed,
    ChangedImage,
    ClassErrors,
    CompareSide,
    Comparison,
    ErrorPair,
    LeftOut,
    Relabelled,
)
from core.tables import EventSource, ImageState, ModelVersion


class NotComparable(Exception):
    """The two versions cannot be compared (said in words, for a 409)."""


@dataclass(frozen=True)
class ImageNow:
    """An image as it is now."""

    id: int
    state: ImageState
    label: str | None
    reject_reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class EventNow:
    """A label event, with class names for its labels."""

    image_id: int
    created_at: datetime
    source: EventSource
    old_label: str | None
    new_label: str | None
    old_state: str
    new_state: str


@dataclass(frozen=True)
class _Validation:
    """A version's validation predictions by image, as class names."""

    actual: dict[int, str]
    predicted: dict[int, str]


def ordered(first: ModelVersion, second: ModelVersion) -> tuple[ModelVersion, ModelVersion]:
    """(older, newer), whatever the order they were asked for in."""
    return (
        (first, second)
        if (aware(first.created_at), first.id) <= (aware(second.created_at), second.id)
        else (second, first)
    )


def check_comparable(version: ModelVersion) -> None:
    if not version.files:
        raise NotComparable(
            f"model {version.id} has no export ({version.status}); compare finished versions"
        )
    if not version.validation or not version.validation.get("image_ids"):
        raise NotComparable(
            f"model {version.id} was trained before Winnow kept every validation prediction; "
            "retrain it (same seed) to compare it"
        )


def _validation(version: ModelVersion) -> _Validation:
    check_comparable(version)
    data = version.validation or {}
    ids, actual, predicted = data["image_ids"], data["actual"], data["predicted"]
    if not len(ids) == len(actual) == len(predicted):
        raise NotComparable(f"model {version.id} has inconsistent validation predictions")
    classes = version.classes
    try:
        return _Validation(
            {i: classes[a] for i, a in zip(ids, actual, strict=True)},
            {i: classes[p] for i, p in zip(ids, predicted, strict=True)},
        )
    except IndexError as exc:
        raise NotComparable(f"model {version.id} predicts a class it does not list") from exc


def _rate(errors: int, total: int) -> float | None:
    return errors / total if total else None


def _side(version: ModelVersion, valid: _Validation) -> CompareSide:
    total = len(valid.actual)
    errors = sum(valid.predicted[i] != label for i, label in valid.actual.items())
    recomputed = _rate(errors, total)
    stored = version.error_rate
    # Training computes the error as a float32 mean; the count here is exact.
    matches = (
        stored is not None
        and recomputed is not None
        and math.isclose(stored, recomputed, rel_tol=1e-6, abs_tol=1e-9)
    )
    return CompareSide(
        id=version.id,
        created_at=aware(version.created_at),
        classes=list(version.classes),
        split_seed=version.split_seed,
        valid_pct=version.valid_pct,
        num_valid=total,
        stored_error_rate=stored,
        recomputed_error_rate=recomputed,
        error_rate_matches=matches,
    )


@dataclass(frozen=True)
class _Standing:
    """An image's state and label at some moment."""

    exists: bool
    state: ImageState
    label: str | None


def _standing_at(moment: datetime, image: ImageNow | None, events: Sequence[EventNow]) -> _Standing:
    """The image as it was at ``moment``: the first event after it says what it was then;
    without one, it is as it is now. ``events`` are the image's, oldest first."""
    if image is None:
        return _Standing(False, ImageState.deleted, None)
    if aware(image.created_at) > moment:
        return _Standing(False, ImageState.pending, None)
    later = next((e for e in events if aware(e.created_at) > moment), None)
    if later is None:
        return _Standing(True, image.state, image.label)
    return _Standing(True, ImageState(later.old_state), later.old_label)


def _same_split(a: ModelVersion, b: ModelVersion) -> bool:
    return a.split_seed == b.split_seed and math.isclose(a.valid_pct, b.valid_pct)


def _why_left(
    image_id: int,
    image: ImageNow | None,
    then: _Standing,
    label_before: str,
    a: ModelVersion,
    b: ModelVersion,
) -> LeftOut:
    """Why a validation image of the older version is not one of the newer version's."""

    def out(reason: str, detail: str) -> LeftOut:
        return LeftOut(image_id=image_id, reason=reason, detail=detail)

    if not then.exists:
        return out("deleted", "no longer in the project")
    if then.state is ImageState.deleted:
        return out("deleted", "deleted")
    if then.state is ImageState.rejected:
        why = image.reject_reason if image else None
        return out("rejected", f"rejected ({why})" if why else "rejected")
    if then.state is ImageState.pending:
        return out("pending", "waiting for verification")
    if then.label is None:
        return out("unlabelled", f"no longer labelled (was {label_before})")
    if then.label not in b.classes:
        return out(
            "relabelled",
            f"relabelled out of {label_before} into {then.label}, "
            f"a class model {b.id} did not train on",
        )
    if not _same_split(a, b):
        return out("split", "the versions split their images differently (seed or share)")
    return out("other", f"not in model {b.id}'s validation set (no verified copy?)")


def _why_new(
    image_id: int, image: ImageNow | None, then: _Standing, a: ModelVersion, b: ModelVersion
) -> LeftOut:
    """Why a validation image of the newer version is not one of the older version's."""

    def out(reason: str, detail: str) -> LeftOut:
        return LeftOut(image_id=image_id, reason=reason, detail=detail)

    if image is None:
        return out("other", "no longer in the project")
    if not then.exists:
        return out("added", f"added after model {a.id} trained")
    if then.state is ImageState.deleted:
        return out("restored", f"restored after model {a.id} trained")
    if then.state is ImageState.rejected:
        return out("restored", f"accepted or restored after model {a.id} trained")
    if then.state is ImageState.pending:
        return out("added", f"verified after model {a.id} trained")
    if then.label is None:
        return out("labelled", f"labelled after model {a.id} trained")
    if then.label not in a.classes:
        return out("relabelled", f"relabelled from {then.label}, a class model {a.id} lacked")
    if not _same_split(a, b):
        return out("split", "the versions split their images differently (seed or share)")
    return out("other", f"not in model {a.id}'s validation set (no verified copy then?)")


def _union(first: Iterable[str], second: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(first))
    names += [n for n in dict.fromkeys(second) if n not in names]
    return names


def compare(
    first: ModelVersion,
    second: ModelVersion,
    images: Mapping[int, ImageNow],
    events: Sequence[EventNow],
) -> Comparison:
    """Compare two versions of one project; the older is "before" whatever the order.

    ``images``: at least every image in only one of the two validation sets, as it is now.
    ``events``: the project's label events since the older version was created (earlier
    ones are ignored), any order.
    """
    a, b = ordered(first, second)
    if a.project_id != b.project_id:
        raise NotComparable(f"models {a.id} and {b.id} belong to different projects")
    va, vb = _validation(a), _validation(b)
    start, end = aware(a.created_at), aware(b.created_at)
    events = sorted(
        (e for e in events if aware(e.created_at) > start), key=lambda e: aware(e.created_at)
    )
    by_image: dict[int, list[EventNow]] = {}
    for event in events:
        by_image.setdefault(event.image_id, []).append(event)
    cleaned = len(
        {e.image_id for e in events if aware(e.created_at) <= end and e.source in HUMAN_SOURCES}
    )

    shared = [i for i in va.actual if i in vb.actual]
    only_before = [
        _why_left(
            i,
            images.get(i),
            _standing_at(end, images.get(i), by_image.get(i, [])),
            va.actual[i],
            a,
            b,
        )
        for i in va.actual
        if i not in vb.actual
    ]
    only_after = [
        _why_new(i, images.get(i), _standing_at(start, images.get(i), by_image.get(i, [])), a, b)
        for i in vb.actual
        if i not in va.actual
    ]

    relabelled = [
        Relabelled(image_id=i, before=va.actual[i], after=vb.actual[i])
        for i in shared
        if va.actual[i] != vb.actual[i]
    ]
    own_before = sum(va.predicted[i] != va.actual[i] for i in shared)
    own_after = sum(vb.predicted[i] != vb.actual[i] for i in shared)
    now_before = sum(va.predicted[i] != vb.actual[i] for i in shared)
    n = len(shared)

    classes = _union(a.classes, b.classes)
    index = {name: k for k, name in enumerate(classes)}
    confusion_before = [[0] * len(classes) for _ in classes]
    confusion_after = [[0] * len(classes) for _ in classes]
    counts = dict.fromkeys(classes, 0)
    wrong_before = dict.fromkeys(classes, 0)
    wrong_after = dict.fromkeys(classes, 0)
    fixed, broken, still_wrong = [], [], 0
    for i in shared:
        label, before, after = vb.actual[i], va.predicted[i], vb.predicted[i]
        confusion_before[index[label]][index[before]] += 1
        confusion_after[index[label]][index[after]] += 1
        counts[label] += 1
        wrong_before[label] += before != label
        wrong_after[label] += after != label
        if before == after:
            continue
        row = ChangedImage(image_id=i, label=label, before=before, after=after)
        if after == label:
            fixed.append(row)
        elif before == label:
            broken.append(row)
        else:
            still_wrong += 1

    side_a, side_b = _side(a, va), _side(b, vb)
    after_labels = ErrorPair(
        errors_before=now_before,
        errors_after=own_after,
        before=_rate(now_before, n),
        after=_rate(own_after, n),
    )
    return Comparison(
        project_id=a.project_id,
        before=side_a,
        after=side_b,
        cleaned=cleaned,
        shared=shared,
        only_before=only_before,
        only_after=only_after,
        relabelled=relabelled,
        own_labels=ErrorPair(
            errors_before=own_before,
            errors_after=own_after,
            before=_rate(own_before, n),
            after=_rate(own_after, n),
        ),
        after_labels=after_labels,
        per_class=[
            ClassErrors(
                label=name,
                count=counts[name],
                errors_before=wrong_before[name],
                errors_after=wrong_after[name],
                error_rate_before=_rate(wrong_before[name], counts[name]),
                error_rate_after=_rate(wrong_after[name], counts[name]),
            )
            for name in classes
            if counts[name]
        ],
        classes=classes,
        confusion_before=confusion_before,
        confusion_after=confusion_after,
        changed=Changed(fixed=fixed, broken=broken, still_wrong=still_wrong),
        verdict=verdict(
            cleaned,
            n,
            after_labels.before,
            after_labels.after,
            side_a.num_valid,
            side_b.num_valid,
            len(relabelled),
        ),
    )
