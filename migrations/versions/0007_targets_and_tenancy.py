"""Holds keep the exact queues mtactl named (queue names, routing domain), and operations the tenant that ran them.

kumod's suspension listing shows only campaign, tenant and domain, so a suspension mtactl made by queue names
(kumod's suspend request has no routing_domain) would read back as one naming no queue: the names are kept here.
A hold mtactl just made carries when it was recorded, so a sync that read the node before then does not drop it.
An operation keeps the tenant of the key that ran it, so a tenant-bound key lists and reads only its own.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("node_holds", sa.Column("routing_domain", sa.Text()))
    op.add_column("node_holds", sa.Column("queue_names", JSON_DOC))
    op.add_column("node_holds", sa.Column("recorded_at", sa.DateTime(timezone=True)))
    op.add_column("operations", sa.Column("tenant_id", sa.String(100)))
    op.create_index("ix_operations_tenant_id", "operations", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_operations_tenant_id", table_name="operations")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("tenant_id")
    with op.batch_alter_table("node_holds") as batch:
        batch.drop_column("recorded_at")
        batch.drop_column("queue_names")
        batch.drop_column("routing_domain")
