"""The shared review queue (leases), blind second opinions, and each model version's
validation predictions for comparing versions on the images they share

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("validation", sa.JSON(), nullable=True))
    op.create_table(
        "second_opinions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("first_user_id", sa.Integer(), nullable=True),
        sa.Column("first_label_id", sa.Integer(), nullable=True),
        sa.Column("first_deleted", sa.Boolean(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "open", "agreed", "disagreed", name="opinion_state", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("second_user_id", sa.Integer(), nullable=True),
        sa.Column("second_label_id", sa.Integer(), nullable=True),
        sa.Column("second_deleted", sa.Boolean(), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["label_events.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["first_label_id"], ["classes.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["first_user_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["requested_by"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["second_label_id"], ["classes.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["second_user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", name="uq_second_opinions_event"),
    )
    op.create_index("ix_second_opinions_project_id", "second_opinions", ["project_id"])
    op.create_table(
        "review_leases",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("opinion_id", sa.Integer(), nullable=True),
        sa.Column("leased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["opinion_id"], ["second_opinions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id"),
    )
    op.create_index("ix_review_leases_holder", "review_leases", ["project_id", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_review_leases_holder", table_name="review_leases")
    op.drop_table("review_leases")
    op.drop_index("ix_second_opinions_project_id", table_name="second_opinions")
    op.drop_table("second_opinions")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("validation")
