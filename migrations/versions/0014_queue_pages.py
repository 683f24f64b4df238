"""GET /api/v1/queues pages by queue name: ``message_counts.queue_name`` sorts by code point on Postgres too
(collation "C", SQLite's BINARY already does), and tenants' queue names have an index of their own.

Pages are keyset ranges of queue names merged in Python with the names nodes report (``node_queues``), so the
database must order names as Python does, whatever the database's default collation. A tenant-bound page is an
index range of (tenant_id, queue_name) instead of a walk over every tenant's queues.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Rebuilds the primary key's index in code point order (no table rewrite: only the collation changes).
        op.execute('ALTER TABLE message_counts ALTER COLUMN queue_name TYPE varchar(255) COLLATE "C"')
    op.create_index("ix_message_counts_tenant", "message_counts", ["tenant_id", "queue_name"])


def downgrade() -> None:
    op.drop_index("ix_message_counts_tenant", table_name="message_counts")
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE message_counts ALTER COLUMN queue_name TYPE varchar(255) COLLATE "default"')
