"""index images.image_url: imports look up every URL they are given

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 18:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(
            "ix_images_image_url", ["image_url"], unique=False, postgresql_using="hash"
        )


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_image_url", postgresql_using="hash")
