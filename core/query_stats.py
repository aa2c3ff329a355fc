"""Quality per search query: which query brings junk.

A query's images are counted as harvested, then by what happened to them: rejected by the
verifier, deleted or relabelled by a reviewer, flagged by the latest ranking's confident
learning. A query with many of the last four is one to rephrase (or add negative terms to).
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from core.tables import Image, ImageScore, ImageState, LabelAction, LabelEvent, ModelVersion


class QueryQuality(BaseModel):
    query: str
    harvested: int = Field(description="Images that arrived from this query, in any state.")
    rejected: int = Field(description="Rejected by verification (broken, too small...).")
    deleted: int = Field(description="Deleted by a reviewer.")
    relabelled: int = Field(description="Images a reviewer gave another label at least once.")
    flagged: int = Field(
        description="Images the latest ranking's confident learning flags as likely mislabelled."
    )


def query_quality(session: Session, project_id: int) -> list[QueryQuality]:
    """One row per search query with images in the project, most harvested first."""
    relabelled = (
        select(LabelEvent.image_id)
        .where(LabelEvent.project_id == project_id, LabelEvent.action == LabelAction.relabel)
        .distinct()
    )
    latest = session.scalar(
        select(func.max(ImageScore.model_version_id))
        .join(ModelVersion, ModelVersion.id == ImageScore.model_version_id)
        .where(ModelVersion.project_id == project_id)
    )
    flagged = (
        select(ImageScore.image_id)
        .where(ImageScore.model_version_id == latest, ImageScore.issue.is_(True))
        .distinct()
    )

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, 1), else_=0))

    rows = session.execute(
        select(
            Image.query,
            func.count(),
            count(Image.state == ImageState.rejected),
            count(Image.state == ImageState.deleted),
            count(Image.id.in_(relabelled)),
            count(Image.id.in_(flagged)),
        )
        .where(Image.project_id == project_id, Image.query.is_not(None))
        .group_by(Image.query)
        .order_by(func.count().desc(), Image.query)
    ).all()
    return [
        QueryQuality(
            query=q,
            harvested=n,
            rejected=r or 0,
            deleted=d or 0,
            relabelled=rl or 0,
            flagged=f or 0,
        )
        for q, n, r, d, rl, f in rows
    ]
