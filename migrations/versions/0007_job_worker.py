"""jobs gain the name of the worker that claimed them

Several worker machines serve one deployment: an operator (and the deployment's tests) can
see on the job itself which worker ran it, and where its log is.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 04:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("worker")
