"""``node_messages``: which mirrored messages a node that can list its queue (ZoneMTA) held at its last sync.

ZoneMTA deletes a row once it is delivered or rejected and keeps no status: a message that was listed and is
listed no more has left that node's queue. The sync compares each listing with this set to find those; it
writes only the difference (new and vanished messages), not the whole listing, every interval.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_messages",
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("message_uuid", sa.Uuid(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("missing_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("node_id", "message_uuid", name="pk_node_messages"),
    )


def downgrade() -> None:
    op.drop_table("node_messages")
