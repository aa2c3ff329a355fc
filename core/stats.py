"""Per-class statistics and duplicate groups of a project: what verification left behind."""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, Field
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import Session, aliased

from core.tables import Image, ImageClass, ImageState


class ClassStats(BaseModel):
    class_id: int | None = Field(description="None for images without a label.")
    name: str | None
    total: int = Field(description="Images in the class, in any state.")
    pending: int = 0
    ok: int = 0
    rejected: int = 0
    deleted: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    exact_duplicates: int = Field(
        default=0, description="Repeated arrivals of an identical file (stored once)."
    )
    near_duplicates: int = Field(
        default=0, description="Images that are a near-copy of an earlier image."
    )
    cross_class_duplicates: int = Field(
        default=0, description="Images in a duplicate group that spans several classes."
    )


class DuplicateMember(BaseModel):
    image_id: int
    sha256: str
    label_id: int | None
    label: str | None
    state: ImageState
    phash: str | None
    other_label_ids: list[int] = Field(
        default_factory=list, description="Other classes this exact file was filed under."
    )


class DuplicateGroup(BaseModel):
    first_id: int = Field(description="The earliest image; the others point at it.")
    cross_class: bool = Field(description="Non-deleted members carry different labels.")
    members: list[DuplicateMember]


def class_stats(session: Session, project_id: int) -> list[ClassStats]:
    """One row per class of the project (even empty ones), plus one for unlabelled images."""
    classes = session.execute(
        select(ImageClass.id, ImageClass.name)
        .where(ImageClass.project_id == project_id)
        .order_by(ImageClass.id)
    ).all()
    rows: dict[int | None, ClassStats] = {
        cid: ClassStats(class_id=cid, name=name, total=0) for cid, name in classes
    }

    def row(label_id: int | None) -> ClassStats:
        if label_id not in rows:
            rows[label_id] = ClassStats(class_id=label_id, name=None, total=0)
        return rows[label_id]

    in_project = Image.project_id == project_id
    by_state = select(
        Image.label_id,
        Image.state,
        Image.reject_reason,
        func.count(),
        func.sum(Image.seen_count - 1),
        func.count(Image.duplicate_of_id),
    ).where(in_project)
    for label_id, state, reason, count, repeats, near in session.execute(
        by_state.group_by(Image.label_id, Image.state, Image.reject_reason)
    ):
        stats = row(label_id)
        stats.total += count
        setattr(stats, ImageState(state).value, getattr(stats, ImageState(state).value) + count)
        if state == ImageState.rejected:
            key = reason or "unknown"
            stats.rejected_by_reason[key] = stats.rejected_by_reason.get(key, 0) + count
        if state != ImageState.deleted:
            stats.exact_duplicates += int(repeats or 0)
            stats.near_duplicates += int(near or 0)

    for group in duplicate_groups(session, project_id, cross_class_only=True):
        for member in group.members:
            if member.state != ImageState.deleted:
                row(member.label_id).cross_class_duplicates += 1
    return sorted(rows.values(), key=lambda s: (s.class_id is None, s.class_id or 0))


def duplicate_groups(
    session: Session, project_id: int, cross_class_only: bool = False
) -> list[DuplicateGroup]:
    """Groups of near-duplicates (first image and those pointing at it), oldest first.

    An exact file that arrived under two classes is a group too, of one image.
    """
    later = aliased(Image)
    linked = (
        select(later.duplicate_of_id)
        .where(later.project_id == project_id, later.duplicate_of_id.is_not(None))
        .distinct()
    )
    claimed = select(Image.id).where(
        Image.project_id == project_id, cast(Image.other_label_ids, String) != "[]"
    )
    firsts = set(session.scalars(linked)) | set(session.scalars(claimed))
    if not firsts:
        return []
    rows = session.execute(
        select(Image, ImageClass.name)
        .outerjoin(ImageClass, ImageClass.id == Image.label_id)
        .where(Image.project_id == project_id)
        .where(or_(Image.id.in_(firsts), Image.duplicate_of_id.in_(firsts)))
        .order_by(Image.id)
    ).all()
    members: dict[int, list[DuplicateMember]] = defaultdict(list)
    for image, label in rows:
        first: int = image.id
        if image.duplicate_of_id is not None and image.duplicate_of_id in firsts:
            first = image.duplicate_of_id
        members[first].append(
            DuplicateMember(
                image_id=image.id,
                sha256=image.sha256,
                label_id=image.label_id,
                label=label,
                state=image.state,
                phash=image.phash,
                other_label_ids=list(image.other_label_ids or []),
            )
        )
    groups = []
    for first in sorted(members):
        group = members[first]
        live = [m for m in group if m.state != ImageState.deleted]
        labels = {m.label_id for m in live if m.label_id} | {
            claim for m in live for claim in m.other_label_ids
        }
        groups.append(DuplicateGroup(first_id=first, cross_class=len(labels) > 1, members=group))
    return [g for g in groups if g.cross_class or not cross_class_only]
