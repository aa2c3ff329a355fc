"""The review queue's default order stored with the images: each image's place in the
project's current ranking, and which ranking that is. Filled by the next rank job; until
then listings sort by joining the scores, as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("review_model_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("review_method", sa.String(length=16), nullable=True))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("review_rank", sa.Integer(), nullable=True))
    op.create_index("ix_images_review", "images", ["project_id", "review_rank", "id"])


def downgrade() -> None:
    op.drop_index("ix_images_review", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("review_rank")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("review_method")
        batch.drop_column("review_model_id")
