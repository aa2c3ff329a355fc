"""Reading a comparison of two model versions from the database: the images that only one
validation set holds, and every label event since the older version (core/compare.py
compares them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.compare import EventNow, ImageNow, check_comparable, compare, ordered
from core.model_version_schemas import Comparison
from core.tables import Image, ImageClass, LabelEvent, ModelVersion

CHUNK = 500  # ids per IN (...) list


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def load_comparison(session: Session, first: ModelVersion, second: ModelVersion) -> Comparison:
    """Compare two versions of one project with the images and label events as stored:
    the images in only one validation set, every label event since the older version."""
    a, b = ordered(first, second)
    check_comparable(a)
    check_comparable(b)
    project_id = a.project_id
    ids_a = set((a.validation or {}).get("image_ids", []))
    ids_b = set((b.validation or {}).get("image_ids", []))
    names = dict(
        session.execute(
            select(ImageClass.id, ImageClass.name).where(ImageClass.project_id == project_id)
        ).all()
    )
    images: dict[int, ImageNow] = {}
    for chunk in _chunks(sorted(ids_a ^ ids_b)):
        found = session.execute(
            select(
                Image.id, Image.state, Image.label_id, Image.reject_reason, Image.created_at
            ).where(Image.project_id == project_id, Image.id.in_(chunk))
        )
        for image_id, state, label_id, reason, created in found:
            label = names.get(label_id) if label_id is not None else None
            images[image_id] = ImageNow(image_id, state, label, reason, created)
    stored = session.execute(
        select(
            LabelEvent.image_id,
            LabelEvent.created_at,
            LabelEvent.source,
            LabelEvent.old_label_id,
            LabelEvent.new_label_id,
            LabelEvent.old_state,
            LabelEvent.new_state,
        )
        .where(LabelEvent.project_id == project_id, LabelEvent.created_at > a.created_at)
        .order_by(LabelEvent.id)
    )
    events = [
        EventNow(
            image_id,
            created,
            source,
            names.get(old) if old is not None else None,
            names.get(new) if new is not None else None,
            old_state,
            new_state,
        )
        for image_id, created, source, old, new, old_state, new_state in stored
    ]
    return compare(a, b, images, events)
