"""An index of the suppressions not enforced yet, in creation order: ``enforce_pending`` reads the oldest of them
on every pass, and walked ``ix_suppressions_created`` past every entry enforced before (nearly the whole list
once it is large).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

PENDING = sa.text("enforced_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_suppressions_pending", "suppressions", ["created_at"], postgresql_where=PENDING, sqlite_where=PENDING
    )


def downgrade() -> None:
    op.drop_index("ix_suppressions_pending", table_name="suppressions")
