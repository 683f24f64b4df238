"""Fleet registry: MTA nodes, with credentials encrypted at rest.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("base_url", sa.String(500), nullable=False),
        sa.Column("auth_scheme", sa.String(10), nullable=False),
        sa.Column("credentials", sa.LargeBinary()),
        sa.Column("labels", JSON_DOC, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_checked_at", TS),
        sa.Column("last_seen_at", TS),
        sa.Column("reachable", sa.Boolean()),
        sa.Column("version", sa.String(100)),
        sa.Column("health_detail", sa.Text()),
    )


def downgrade() -> None:
    op.drop_table("nodes")
