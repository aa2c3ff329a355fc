"""The review order stored with the images: each image's place in the ranking a listing by
loss shows by default (images.review_rank), and which ranking that is (projects.review_model_id
and review_method)."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from core.db import table_of
from core.tables import Image, ImageScore, ModelVersion, Project

_IMAGES = table_of(Image)
_SCORES = table_of(ImageScore)
_MODELS = table_of(ModelVersion)


def latest_scored_model(session: Session, project_id: int) -> tuple[int, str] | None:
    """The newest model version that has scores, and its most honest method."""
    row = session.execute(_LATEST_SCORED, {"project_id": project_id}).first()
    return (row[0], row[1]) if row else None


_LATEST_SCORED = (
    select(_SCORES.c.model_version_id, _SCORES.c.method)
    .join(_MODELS, _MODELS.c.id == _SCORES.c.model_version_id)
    .where(_MODELS.c.project_id == bindparam("project_id"))
    # No GROUP BY: the first row in index order answers, without reading every score.
    # "out_of_fold" sorts after "in_sample", so desc() prefers it for the same model.
    .order_by(_SCORES.c.model_version_id.desc(), _SCORES.c.method.desc())
    .limit(1)
)


def store_review_rank(session: Session, project_id: int) -> None:
    """Write each image's place in the ranking a listing by loss shows by default (the
    newest scored model, its most honest method), in the caller's transaction, with the
    scores: a review page then reads one range of ix_images_review, from the project's
    first entry to the page's last (the offset's length: 1.4 ms at offset 5,000), where
    joining and sorting every image's score cost about 10 ms of the database's CPU per page
    at 10,000 images. Ranking is not a change to an image: updated_at and the
    version stay as they are."""
    images = _IMAGES
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
