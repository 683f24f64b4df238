"""The suppression list (``suppressions``), what mtactl pushed to nodes' own lists (``suppression_pushes``) and the
soft bounces counted towards the soft-bounce threshold (``suppression_soft_bounces``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("email", sa.String(640), nullable=False),
        sa.Column("scope_key", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.String(100), nullable=True),
        sa.Column("domain", sa.String(520), nullable=False),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("enforced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("held_messages", JSON_DOC, nullable=True),
        sa.Column("cancel_operation_id", sa.Uuid(), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("email", "scope_key", name="pk_suppressions"),
    )
    op.create_index("ix_suppressions_created", "suppressions", ["created_at", "email", "scope_key"])
    op.create_index("ix_suppressions_expires", "suppressions", ["expires_at"])
    op.create_index("ix_suppressions_domain", "suppressions", ["domain"])
    op.create_table(
        "suppression_pushes",
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(640), nullable=False),
        sa.Column("reference", sa.String(100), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "email", name="pk_suppression_pushes"),
    )
    op.create_table(
        "suppression_soft_bounces",
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("email", sa.String(640), nullable=False),
        sa.Column("dedupe_key", sa.LargeBinary(16), nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "email", "dedupe_key", name="pk_suppression_soft_bounces"),
    )
    op.create_index("ix_suppression_soft_bounces_event_at", "suppression_soft_bounces", ["event_at"])


def downgrade() -> None:
    op.drop_table("suppression_soft_bounces")
    op.drop_table("suppression_pushes")
    op.drop_table("suppressions")
