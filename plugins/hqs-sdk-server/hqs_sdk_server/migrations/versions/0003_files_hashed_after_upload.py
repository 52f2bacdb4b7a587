"""Files: an upload is kept before its SHA-256 is known (NULL until the service has hashed it),
so one user may hold the same content and name under two ids.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_constraint("uq_files_user_content_name", type_="unique")
        batch.alter_column("sha256", existing_type=sa.String(64), nullable=True)
        batch.create_index("ix_files_user_content_name", ["user_id", "sha256", "name"])
        batch.create_index("ix_files_unhashed", ["sha256"],
                           sqlite_where=sa.text("sha256 IS NULL"),
                           postgresql_where=sa.text("sha256 IS NULL"))


def downgrade() -> None:
    op.execute("DELETE FROM files WHERE sha256 IS NULL")
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_unhashed")
        batch.drop_index("ix_files_user_content_name")
        batch.alter_column("sha256", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_files_user_content_name",
                                       ["user_id", "sha256", "name"])
