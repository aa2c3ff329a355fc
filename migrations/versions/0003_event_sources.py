"""label_events.source becomes a fixed vocabulary: any other value recorded as "api"

The PATCH route took any string as the source of a label event; the tables now map it to
EventSource, which would refuse to load an unknown value.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCES = ("api", "ui", "bulk", "verify")


def upgrade() -> None:
    events = sa.table("label_events", sa.column("source", sa.String))
    op.execute(events.update().where(events.c.source.not_in(SOURCES)).values(source="api"))


def downgrade() -> None:
    # The old column took any string; nothing to undo.
    pass
