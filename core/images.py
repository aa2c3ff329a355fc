"""Listing images with their latest scores: the review queue is a sorted listing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, String, and_, cast, func, or_, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from core.schemas import ImageOut
from core.tables import (
    EventSource,
    Image,
    ImageClass,
    ImageScore,
    ImageState,
    LabelEvent,
    ModelVersion,
    OpinionState,
    SecondOpinion,
)

Sort = Literal["id", "-id", "loss", "-loss"]


@dataclass
class ImageFilter:
    state: ImageState | None = None
    label_id: int | None = None
    unlabelled: bool = False
    model_version_id: int | None = None
    method: str | None = None
    duplicates: bool = False
    # Duplicates whose copies carry different labels: a label error in one of them.
    cross_class: bool = False
    reject_reason: str | None = None
    query: str | None = None  # the search query that brought the image in
    ids: list[int] | None = None  # only these images (a reviewer's leased batch)
    # Only images whose blind second opinion disagreed, not decided about since.
    disagreed: bool = False


def latest_scored_model(session: Session, project_id: int) -> tuple[int, str] | None:
    """The newest model version that has scores, and its most honest method."""
    row = session.execute(
        select(ImageScore.model_version_id, ImageScore.method)
        .join(ModelVersion, ModelVersion.id == ImageScore.model_version_id)
        .where(ModelVersion.project_id == project_id)
        # No GROUP BY: the first row in index order answers, without reading every score.
        .order_by(ImageScore.model_version_id.desc(), ImageScore.method.desc())
        .limit(1)
    ).first()
    # "out_of_fold" sorts after "in_sample", so desc() prefers it for the same model.
    return (row[0], row[1]) if row else None


# Label events a person asked for (not the verifier's): decisions about an image.
HUMAN_SOURCES = (EventSource.api, EventSource.ui, EventSource.bulk)


def unresolved_disagreements(project_id: int) -> Select[int]:
    """Images whose second opinion disagreed and which nobody has decided about since."""
    return select(SecondOpinion.image_id).where(
        SecondOpinion.project_id == project_id,
        SecondOpinion.state == OpinionState.disagreed,
        ~select(LabelEvent.id)
        .where(
            LabelEvent.image_id == SecondOpinion.image_id,
            LabelEvent.id > SecondOpinion.event_id,
            LabelEvent.source.in_(HUMAN_SOURCES),
            LabelEvent.created_at >= SecondOpinion.answered_at,
        )
        .exists(),
    )


def list_images(
    session: Session,
    project_id: int,
    flt: ImageFilter,
    sort: Sort = "id",
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[ImageOut]]:
    if flt.model_version_id is None and sort in ("loss", "-loss"):
        found = latest_scored_model(session, project_id)
        if found:
            flt.model_version_id = found[0]
            flt.method = flt.method or found[1]
    conds: list[ColumnElement[bool]] = [Image.project_id == project_id]
    if flt.state is not None:
        conds.append(Image.state == flt.state)
    if flt.label_id is not None:
        conds.append(Image.label_id == flt.label_id)
    if flt.unlabelled:
        conds.append(Image.label_id.is_(None))
    if flt.duplicates:
        conds.append(
            or_(Image.duplicate_of_id.is_not(None), cast(Image.other_label_ids, String) != "[]")
        )
    if flt.cross_class:
        original = aliased(Image)
        conds.append(
            or_(
                cast(Image.other_label_ids, String) != "[]",
                select(original.id)
                .where(original.id == Image.duplicate_of_id, original.label_id != Image.label_id)
                .exists(),
            )
        )
    if flt.reject_reason is not None:
        conds.append(Image.reject_reason == flt.reject_reason)
    if flt.query is not None:
        conds.append(Image.query == flt.query)
    if flt.ids is not None:
        conds.append(Image.id.in_(flt.ids))
    if flt.disagreed:
        conds.append(Image.id.in_(unresolved_disagreements(project_id)))
    # The outer joins below match at most one row each (primary keys; one score per model,
    # image and method), so they cannot change the count: count the filtered images alone.
    total = session.scalar(select(func.count(Image.id)).where(*conds)) or 0
    # With no model chosen the score join matches nothing and the score columns are null.
    scored = and_(
        ImageScore.image_id == Image.id,
        ImageScore.model_version_id == (flt.model_version_id or -1),
        ImageScore.method == (flt.method or "in_sample"),
    )
    order: dict[str, tuple[ColumnElement[Any], ...]] = {
        "id": (Image.id.asc(),),
        "-id": (Image.id.desc(),),
        "loss": (ImageScore.loss.is_(None), ImageScore.loss.asc(), Image.id.asc()),
        "-loss": (ImageScore.loss.is_(None), ImageScore.loss.desc(), Image.id.asc()),
    }
    # Sort narrow rows (id and loss) to find the page, then read the page's full rows: sorting
    # 10,000 whole image rows for 100 of them was most of a review page's time.
    page = (
        select(Image.id)
        .outerjoin(ImageScore, scored)
        .where(*conds)
        .order_by(*order[sort])
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    # Columns, not ORM objects: a page only shows its rows, and making 100 tracked Image
    # instances was most of its time in Python.
    stmt = (
        select(*_OUT_COLUMNS)
        .join(page, page.c.id == Image.id)
        .outerjoin(_LABEL, _LABEL.id == Image.label_id)
        .outerjoin(ImageScore, scored)
        .outerjoin(_PREDICTED, _PREDICTED.id == ImageScore.predicted_id)
        .order_by(*order[sort])
    )
    return total, [ImageOut.model_validate(row) for row in session.execute(stmt).mappings()]


# An image as a listing shows it: its own columns, its class's name, and the score columns.
_LABEL, _PREDICTED = aliased(ImageClass, name="label"), aliased(ImageClass, name="predicted")
_OUT_COLUMNS = [
    *(getattr(Image, name) for name in ImageOut.model_fields if name in Image.__table__.c),
    _LABEL.name.label("label"),
    ImageScore.loss.label("loss"),
    _PREDICTED.name.label("predicted"),
    ImageScore.probability.label("probability"),
]


def image_out(session: Session, image: Image, names: Mapping[int, str] | None = None) -> ImageOut:
    """An image as the API shows it; ``names`` (class names by id) spares the class lookup."""
    out = ImageOut.model_validate(image)
    if image.label_id is None:
        out.label = None
    elif names is not None and image.label_id in names:
        out.label = names[image.label_id]
    else:
        cls = session.get(ImageClass, image.label_id)
        out.label = cls.name if cls else None
    return out


def filter_choices(session: Session, project_id: int) -> dict[str, list[str]]:
    """The reject reasons and search queries a project's images have, for filter menus."""
    reasons = session.scalars(
        select(Image.reject_reason)
        .where(Image.project_id == project_id, Image.reject_reason.is_not(None))
        .distinct()
        .order_by(Image.reject_reason)
    )
    queries = session.scalars(
        select(Image.query)
        .where(Image.project_id == project_id, Image.query.is_not(None))
        .distinct()
        .order_by(Image.query)
    )
    return {"reasons": [r for r in reasons if r], "queries": [q for q in queries if q]}
