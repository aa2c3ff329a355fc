"""Listing images with their latest scores: the review queue is a sorted listing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import GenericAlias
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import (
    Integer,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from typing_extensions import TypedDict

from core.db import table_of
from core.review_rank import latest_scored_model, stored_order_holds
from core.schemas import ImageOut
from core.tables import (
    EventSource,
    Image,
    ImageClass,
    ImageScore,
    ImageState,
    LabelEvent,
)
from core.team_tables import OpinionState, SecondOpinion

Sort = Literal["id", "-id", "loss", "-loss"]

# Tables, not mapped classes: the ORM's loading of each row was a third of a review page's
# time in Python.
_IMAGES = table_of(Image)
_SCORES = table_of(ImageScore)
_CLASSES = table_of(ImageClass)


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


# Label events a person asked for (not the verifier's): decisions about an image.
HUMAN_SOURCES = (EventSource.api, EventSource.ui, EventSource.bulk)


def unresolved_disagreements(project_id: int | BindParameter[int]) -> Select[int]:
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
    total, rows = list_rows(session, project_id, flt, sort, limit, offset)
    # Validated as one list: validating each row on its own cost 4.3 ms against 1.6 ms a
    # page of 100.
    return total, _PAGE_ITEMS.validate_python(rows)


def list_rows(
    session: Session,
    project_id: int,
    flt: ImageFilter,
    sort: Sort = "id",
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """The number of images the filter matches, and one page of them as ImageOut's fields
    (plain values, straight from the database's typed columns)."""
    if flt.model_version_id is None and sort in ("loss", "-loss"):
        found = latest_scored_model(session, project_id)
        if found:
            flt.model_version_id = found[0]
            flt.method = flt.method or found[1]
    stored = sort == "-loss" and stored_order_holds(
        session, project_id, flt.model_version_id, flt.method
    )
    count, page = _listing(_Shape.of(flt, sort, stored))
    params: dict[str, Any] = {
        "project_id": project_id,
        "state": flt.state,
        "label_id": flt.label_id,
        "reject_reason": flt.reject_reason,
        "query": flt.query,
        "ids": flt.ids or [],
        # With no model chosen the score join matches nothing and the score columns are null.
        "model_id": flt.model_version_id or -1,
        "method": flt.method or "in_sample",
        "limit": limit,
        "offset": offset,
    }
    # The outer joins of the page match at most one row each (primary keys; one score per
    # model, image and method), so they cannot change the count: count the filtered images.
    total = session.execute(count, params).scalar() or 0
    result = session.execute(page, params)
    keys = list(result.keys())
    return total, [dict(zip(keys, row, strict=True)) for row in result]


def page_json(total: int, rows: list[dict[str, Any]]) -> bytes:
    """A page of ``list_rows`` as ImagePage's JSON, by ImageOut's own serialisers but without
    a model per row: validating and dumping 100 models took twice as long, for rows whose
    values come from typed columns."""
    return _PAGE_JSON.dump_json({"total": total, "items": rows})


_PAGE_ITEMS = TypeAdapter(list[ImageOut])
# ImageOut's fields as a TypedDict (typing_extensions': pydantic needs it before Python 3.12),
# made from the model so that the two cannot drift apart; called through Any because type
# checkers take TypedDict's functional form with literal fields only.
_typed_dict: Any = TypedDict
_ROW = _typed_dict("ImageRow", {name: f.annotation for name, f in ImageOut.model_fields.items()})
_PAGE_JSON = TypeAdapter(
    _typed_dict("ImagePageRows", {"total": int, "items": GenericAlias(list, (_ROW,))})
)


@dataclass(frozen=True)
class _Shape:
    """Which filters a listing has and how it sorts: its statements differ only in this,
    the values are bound when it runs."""

    sort: Sort
    stored: bool  # sort=-loss read from images.review_rank
    state: bool
    label: bool
    unlabelled: bool
    duplicates: bool
    cross_class: bool
    reason: bool
    query: bool
    ids: bool
    disagreed: bool

    @classmethod
    def of(cls, flt: ImageFilter, sort: Sort, stored: bool) -> _Shape:
        return cls(
            sort=sort,
            stored=stored,
            state=flt.state is not None,
            label=flt.label_id is not None,
            unlabelled=flt.unlabelled,
            duplicates=flt.duplicates,
            cross_class=flt.cross_class,
            reason=flt.reject_reason is not None,
            query=flt.query is not None,
            ids=flt.ids is not None,
            disagreed=flt.disagreed,
        )


_LABEL, _PREDICTED = _CLASSES.alias("label"), _CLASSES.alias("predicted")
# An image as a listing shows it, in ImageOut's order: its own columns, its class's name
# and the score columns.
_DERIVED = {
    "label": _LABEL.c.name,
    "loss": _SCORES.c.loss,
    "predicted": _PREDICTED.c.name,
    "probability": _SCORES.c.probability,
}
_OUT_COLUMNS = [
    _DERIVED[name].label(name) if name in _DERIVED else _IMAGES.c[name]
    for name in ImageOut.model_fields
]


@lru_cache(maxsize=256)
def _listing(shape: _Shape) -> tuple[Select[Any], Select[Any]]:
    """The count and the page statements of a listing shape, built once: building them
    cost more of a review page's time than running them."""
    image = _IMAGES.c
    conds: list[ColumnElement[bool]] = [image.project_id == bindparam("project_id")]
    if shape.state:
        conds.append(image.state == bindparam("state"))
    if shape.label:
        conds.append(image.label_id == bindparam("label_id"))
    if shape.unlabelled:
        conds.append(image.label_id.is_(None))
    if shape.duplicates:
        conds.append(
            or_(image.duplicate_of_id.is_not(None), cast(image.other_label_ids, String) != "[]")
        )
    if shape.cross_class:
        original = _IMAGES.alias("original")
        conds.append(
            or_(
                cast(image.other_label_ids, String) != "[]",
                select(original.c.id)
                .where(
                    original.c.id == image.duplicate_of_id,
                    original.c.label_id != image.label_id,
                )
                .exists(),
            )
        )
    if shape.reason:
        conds.append(image.reject_reason == bindparam("reject_reason"))
    if shape.query:
        conds.append(image.query == bindparam("query"))
    if shape.ids:
        conds.append(image.id.in_(bindparam("ids", expanding=True)))
    if shape.disagreed:
        conds.append(image.id.in_(unresolved_disagreements(bindparam("project_id"))))
    count = select(func.count(image.id)).where(*conds)
    score = _SCORES.c
    scored = and_(
        score.image_id == image.id,
        score.model_version_id == bindparam("model_id"),
        score.method == bindparam("method"),
    )
    order: dict[str, tuple[ColumnElement[Any], ...]] = {
        "id": (image.id.asc(),),
        "-id": (image.id.desc(),),
        "loss": (score.loss.is_(None), score.loss.asc(), image.id.asc()),
        "-loss": (score.loss.is_(None), score.loss.desc(), image.id.asc()),
    }
    # Sort narrow rows (id and loss) to find the page, then read the page's full rows: sorting
    # 10,000 whole image rows for 100 of them was most of a review page's time.
    ids = select(image.id)
    if shape.stored:
        # The same order, stored: the images without a score last, by id.
        order["-loss"] = (image.review_rank.asc().nulls_last(), image.id.asc())
    else:
        ids = ids.outerjoin(_SCORES, scored)
    window = (
        ids.where(*conds)
        .order_by(*order[shape.sort])
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
        .subquery()
    )
    page = (
        select(*_OUT_COLUMNS)
        .join(window, window.c.id == image.id)
        .outerjoin(_LABEL, _LABEL.c.id == image.label_id)
        .outerjoin(_SCORES, scored)
        .outerjoin(_PREDICTED, _PREDICTED.c.id == score.predicted_id)
        .order_by(*order[shape.sort])
    )
    return count, page


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
