"""Near-duplicate pairs as review items: the latest ranking's pairs of images whose model
features are almost the same, cross-class pairs first (one of the two labels is wrong, or the
two are one photo filed twice)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.images import HUMAN_SOURCES, ImageFilter, list_images
from core.kinds import JobKindName
from core.schemas import ImageOut
from core.tables import ImageState, Job, JobStatus, LabelAction, LabelEvent


class PairOut(BaseModel):
    similarity: float = Field(description="Cosine similarity of the model's penultimate features.")
    cross_class: bool = Field(description="The two carry different labels now.")
    settled: bool = Field(
        description="Decided since the ranking: one of them is out of the dataset, the labels "
        "now agree on a pair that disagreed, or both were kept."
    )
    images: list[ImageOut]


class PairsPage(BaseModel):
    job_id: int | None = Field(description="The rank job that found the pairs.")
    model_version_id: int | None
    total: int
    items: list[PairOut]


def latest_rank_job(session: Session, project_id: int) -> Job | None:
    return session.scalar(
        select(Job)
        .where(
            Job.project_id == project_id,
            Job.kind == JobKindName.rank,
            Job.status == JobStatus.succeeded,
        )
        .order_by(Job.finished_at.desc(), Job.id.desc())
        .limit(1)
    )


def similar_pairs(
    session: Session,
    project_id: int,
    cross_class: bool = False,
    include_settled: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> PairsPage:
    """The latest ranking's pairs with both images as they are now, cross-class first."""
    job = latest_rank_job(session, project_id)
    found: list[dict[str, Any]] = (job.result or {}).get("similar_pairs", []) if job else []
    if job is None or not found:
        return PairsPage(job_id=job.id if job else None, model_version_id=None, total=0, items=[])
    ids = sorted({i for pair in found for i in pair["image_ids"]})
    _, rows = list_images(session, project_id, ImageFilter(ids=ids), limit=len(ids))
    images = {image.id: image for image in rows}
    kept_since = set(
        session.scalars(
            select(LabelEvent.image_id).where(
                LabelEvent.project_id == project_id,
                LabelEvent.image_id.in_(ids),
                LabelEvent.action == LabelAction.keep,
                LabelEvent.source.in_(HUMAN_SOURCES),
                LabelEvent.created_at >= job.finished_at,
            )
        )
    )
    pairs = []
    for pair in found:
        a, b = (images.get(i) for i in pair["image_ids"])
        if a is None or b is None:  # an image of another project, or gone
            continue
        now_cross = a.label_id != b.label_id
        settled = (
            a.state is not ImageState.ok
            or b.state is not ImageState.ok
            or (pair["cross_class"] and not now_cross)
            or {a.id, b.id} <= kept_since
        )
        if (cross_class and not now_cross) or (settled and not include_settled):
            continue
        pairs.append(
            PairOut(
                similarity=pair["similarity"],
                cross_class=now_cross,
                settled=settled,
                images=[a, b],
            )
        )
    pairs.sort(key=lambda p: (not p.cross_class, -p.similarity))
    return PairsPage(
        job_id=job.id,
        model_version_id=(job.result or {}).get("model_version_id"),
        total=len(pairs),
        items=pairs[offset : offset + limit],
    )
