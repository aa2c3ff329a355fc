"""Index the review ordering: one model's scores by method and loss.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "ix_image_scores_review", "image_scores", ["model_version_id", "method", "loss"]
    )


def downgrade() -> None:
    op.drop_index("ix_image_scores_review", table_name="image_scores")
