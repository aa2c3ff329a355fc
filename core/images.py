"""Listing images with their latest scores: the review queue is a sorted listing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from typing import cast as cast_type

from pydantic import TypeAdapter
from sqlalchemy import Select, String, Table, and_, cast, func, or_, select, update
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
    Project,
)
from core.team_tables import OpinionState, SecondOpinion

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


def store_review_rank(session: Session, project_id: int) -> None:
    """Write each image's place in the ranking a listing by loss shows by default (the
    newest scored model, its most honest method), in the caller's transaction, with the
    scores: a review page then reads one index range (ix_images_review) at any offset,
    where joining and sorting every image's score cost about 10 ms of the database's CPU
    per page at 10,000 images. Ranking is not a change to an image: updated_at and the
    version stay as they are."""
    images = cast_type(Table, Image.__table__)
    found = latest_scored_model(session, project_id)
    model_id, method = found if found else (None, None)
    scored = select(ImageScore.image_id).where(
        ImageScore.model_version_id == model_id, ImageScore.method == method
    )
    session.execute(
        update(images)
        .where(
            images.c.project_id == project_id,
            images.c.review_rank.is_not(None),
            images.c.id.not_in(scored),
        )
        .values(review_rank=None, updated_at=images.c.updated_at)
    )
    if found:
        place = func.row_number().over(order_by=(ImageScore.loss.desc(), ImageScore.image_id))
        ranked = scored.add_columns(place.label("place")).subquery()
        session.execute(
            update(images)
            .where(images.c.id == ranked.c.image_id)
            .values(review_rank=ranked.c.place, updated_at=images.c.updated_at)
        )
    project = session.get(Project, project_id)
    if project is not None:
        project.review_model_id, project.review_method = model_id, method
        session.flush()


def stored_order_holds(
    session: Session, project_id: int, model_id: int | None, method: str | None
) -> bool:
    """Whether images.review_rank holds this ranking (a model version's scores by one method)."""
    project = session.get(Project, project_id)  # the request's access check loaded it
    return (
        project is not None
        and model_id is not None
        and project.review_model_id == model_id
        and project.review_method == (method or "in_sample")
    )


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
    ids = select(Image.id)
    if sort == "-loss" and stored_order_holds(
        session, project_id, flt.model_version_id, flt.method
    ):
        # The same order, stored: the images without a score last, by id.
        order["-loss"] = (Image.review_rank.asc().nulls_last(), Image.id.asc())
    else:
        ids = ids.outerjoin(ImageScore, scored)
    page = ids.where(*conds).order_by(*order[sort]).limit(limit).offset(offset).subquery()
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
    # Plain dicts, validated as one list: validating each RowMapping on its own was most of a
    # page's time in Python (4.3 ms against 1.6 ms a page of 100).
    result = session.execute(stmt)
    keys = list(result.keys())
    return total, _PAGE_ITEMS.validate_python([dict(zip(keys, row, strict=True)) for row in result])


_PAGE_ITEMS = TypeAdapter(list[ImageOut])

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
