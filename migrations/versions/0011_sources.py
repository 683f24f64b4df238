"""``sources`` (egress sources' daily limits and sending windows) and ``source_holds`` (what mtactl holds for them).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("daily_limit", sa.BigInteger(), nullable=False),
        sa.Column("window_start", sa.String(5), nullable=False),
        sa.Column("window_end", sa.String(5), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("nodes", JSON, nullable=False),
        sa.Column("tenants", JSON, nullable=False),
        sa.Column("pools", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "source_holds",
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("hold_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("source", "node_id", "path", name="pk_source_holds"),
    )


def downgrade() -> None:
    op.drop_table("source_holds")
    op.drop_table("sources")
