"""Foundation: message_queue (seed 000 §6), api_keys, audit_log, job_heartbeats.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TEXT_LIST = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)

FILTER_COLUMNS = (
    "queue_name",
    "status",
    "queue_state",
    "domain",
    "recipient",
    "sender",
    "routing_domain",
    "campaign_id",
    "tenant_id",
    "pool_name",
    "bounce_classification",
    "priority",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "message_queue",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("queue_name", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("routing_domain", sa.String(255)),
        sa.Column("campaign_id", sa.String(100)),
        sa.Column("tenant_id", sa.String(100)),
        sa.Column("pool_name", sa.String(100)),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("queue_state", sa.String(50), nullable=False, server_default="active"),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="5"),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("num_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="20"),
        sa.Column("last_attempt_at", TS),
        sa.Column("next_attempt_at", TS),
        sa.Column("last_bounce_reason", sa.Text()),
        sa.Column("bounce_classification", sa.String(50)),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("scheduled_at", TS),
        sa.Column("delivered_at", TS),
        sa.Column("expires_at", TS),
        sa.Column("smtp_response", JSON_DOC),
        sa.Column("delivery_protocol", sa.String(10), server_default="smtp"),
        sa.Column("headers", JSON_DOC),
        sa.Column("body_hash", sa.String(64)),
        sa.Column("attachment_count", sa.Integer(), server_default="0"),
        sa.Column("tags", TEXT_LIST),
        sa.Column("metadata", JSON_DOC),
        sa.Column("subject", sa.Text()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_message_queue_created_at", "message_queue", ["created_at", "id"])
    op.create_index("ix_message_queue_scheduled_at", "message_queue", ["scheduled_at", "id"])
    op.create_index("ix_message_queue_next_attempt_at", "message_queue", ["next_attempt_at"])
    op.create_index("ix_message_queue_num_attempts", "message_queue", ["num_attempts", "id"])
    op.create_index("ix_message_queue_size_bytes", "message_queue", ["size_bytes", "id"])
    for column in FILTER_COLUMNS:
        op.create_index(f"ix_message_queue_{column}", "message_queue", [column, "created_at", "id"])
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_message_queue_tags ON message_queue USING gin (tags)")
        op.execute(
            "CREATE INDEX ix_message_queue_search ON message_queue USING gin "
            "((lower(recipient || ' ' || sender || ' ' || coalesce(subject, ''))) gin_trgm_ops)"
        )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", JSON_DOC, nullable=False),
        sa.Column("tenant_id", sa.String(100)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS),
        sa.Column("revoked_at", TS),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.Text()),
        sa.Column("reason", sa.Text()),
        sa.Column("detail", JSON_DOC),
        sa.Column("success", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_table(
        "job_heartbeats",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("runner", sa.String(50), nullable=False),
        sa.Column("last_run_at", TS, nullable=False),
        sa.Column("last_error", sa.Text()),
    )


def downgrade() -> None:
    op.drop_table("job_heartbeats")
    op.drop_table("audit_log")
    op.drop_table("api_keys")
    op.drop_table("message_queue")
