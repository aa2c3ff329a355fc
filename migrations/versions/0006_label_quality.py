"""image_scores gains self-confidence, normalised margin and confident learning's issue flag

The loss alone ranks; the other scores let a reviewer (and the review order) use the
measure that finds wrong labels best, all computed from the same probabilities.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 02:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("image_scores") as batch:
        batch.add_column(sa.Column("self_confidence", sa.Float(), nullable=True))
        batch.add_column(sa.Column("margin", sa.Float(), nullable=True))
        batch.add_column(sa.Column("issue", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_scores") as batch:
        batch.drop_column("issue")
        batch.drop_column("margin")
        batch.drop_column("self_confidence")
