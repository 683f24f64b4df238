"""What each node holds, as the sync job last read it: queue counts, suspensions and standing bounces.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("nodes", sa.Column("last_synced_at", TS))
    op.add_column("nodes", sa.Column("sync_error", sa.Text()))
    op.add_column("nodes", sa.Column("tsa_url", sa.String(500)))
    op.create_table(
        "node_queues",
        sa.Column("node_id", sa.Uuid(), primary_key=True),
        sa.Column("scheduled", JSON_DOC, nullable=False),
        sa.Column("ready", JSON_DOC, nullable=False),
    )
    op.create_table(
        "node_holds",
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("hold_id", sa.Text(), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("domain", sa.Text()),
        sa.Column("tenant", sa.Text()),
        sa.Column("campaign", sa.Text()),
        sa.Column("ready_queue", sa.Text()),
        sa.Column("remaining", sa.Text()),
        sa.Column("total_bounced", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "kind", "hold_id"),
    )
    op.create_index("ix_node_holds_hold_id", "node_holds", ["hold_id"])


def downgrade() -> None:
    op.drop_table("node_holds")
    op.drop_table("node_queues")
    op.drop_column("nodes", "tsa_url")
    op.drop_column("nodes", "sync_error")
    op.drop_column("nodes", "last_synced_at")
