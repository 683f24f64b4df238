"""Event ingestion: the append-only events table (daily partitions on Postgres), dead letters, and the
ordering columns the order-independent mirror merge needs on message_queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("message_queue") as batch:
        batch.add_column(sa.Column("status_at", TS))
        batch.add_column(sa.Column("response_at", TS))
        batch.add_column(sa.Column("failure_at", TS))

    columns = [
        sa.Column("event_at", TS, nullable=False),
        sa.Column("dedupe_key", sa.LargeBinary(16), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("message_uuid", sa.Uuid()),
        sa.Column("mta_message_id", sa.String(100), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("queue_name", sa.String(255), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("tenant_id", sa.String(100)),
        sa.Column("campaign_id", sa.String(100)),
        sa.Column("response_code", sa.Integer()),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("dedupe_key", "event_at", name="pk_events"),
    ]
    if postgres:
        op.create_table("events", *columns, postgresql_partition_by="RANGE (event_at)")
        # Rows outside every daily partition (very late or clock-skewed records) land here rather than fail.
        op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    else:
        op.create_table("events", *columns)
    op.create_index("ix_events_event_at", "events", ["event_at"])
    op.create_index("ix_events_message", "events", ["message_uuid", "event_at"])
    op.create_index("ix_events_domain", "events", ["domain", "event_at"])
    op.create_index("ix_events_tenant", "events", ["tenant_id", "event_at"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("api_key", sa.String(100)),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("events")
    with op.batch_alter_table("message_queue") as batch:
        batch.drop_column("failure_at")
        batch.drop_column("response_at")
        batch.drop_column("status_at")
