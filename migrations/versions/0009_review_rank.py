"""The review queue's default order stored with the images: each image's place in the
project's current ranking, and which ranking that is, filled here for projects already
ranked (as core.review_rank.store_review_rank does after each rank job).

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
    _fill()


# The newest scored model of each project, its out-of-fold scores preferred.
LATEST = sa.text(
    "SELECT s.model_version_id, s.method FROM image_scores s "
    "JOIN model_versions m ON m.id = s.model_version_id WHERE m.project_id = :project "
    "ORDER BY s.model_version_id DESC, s.method DESC LIMIT 1"
)
RANK = sa.text(
    "UPDATE images SET review_rank = ranked.place FROM ("
    "SELECT image_id, ROW_NUMBER() OVER (ORDER BY loss DESC, image_id) AS place "
    "FROM image_scores WHERE model_version_id = :model AND method = :method) AS ranked "
    "WHERE images.id = ranked.image_id"
)
MARK = sa.text(
    "UPDATE projects SET review_model_id = :model, review_method = :method WHERE id = :project"
)


def _fill() -> None:
    bind = op.get_bind()
    for (project,) in bind.execute(sa.text("SELECT id FROM projects")).all():
        found = bind.execute(LATEST, {"project": project}).first()
        if found is not None:
            ranking = {"project": project, "model": found[0], "method": found[1]}
            bind.execute(RANK, ranking)
            bind.execute(MARK, ranking)


def downgrade() -> None:
    op.drop_index("ix_images_review", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("review_rank")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("review_method")
        batch.drop_column("review_model_id")
