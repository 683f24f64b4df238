"""Domain health scores, throttling rules and their decisions, the per-minute response-pattern matches, and the
duration of each job's last run.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("job_heartbeats", sa.Column("last_duration_ms", sa.Float(), nullable=True))
    op.create_table(
        "domain_scores",
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("domain", sa.String(320), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("bounced", sa.BigInteger(), nullable=False),
        sa.Column("deferred", sa.BigInteger(), nullable=False),
        sa.Column("complaints", sa.BigInteger(), nullable=False),
        sa.Column("average_delivery_time", sa.Float(), nullable=False),
        sa.Column("last_successful_delivery", sa.DateTime(timezone=True), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "domain", name="pk_domain_scores"),
    )
    op.create_index("ix_domain_scores_score", "domain_scores", ["tenant", "score", "domain"])
    op.create_table(
        "policies",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("metric", sa.String(20), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("window", sa.String(50), nullable=False),
        sa.Column("min_events", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("match", JSON, nullable=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("duration", sa.String(50), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "policy_decisions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("policy_id", sa.Uuid(), nullable=False),
        sa.Column("policy_name", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("scope_value", sa.String(320), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("metric_value", sa.Float(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operation_id", sa.Uuid(), nullable=True),
        sa.Column("holds", JSON, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(20), nullable=True),
        sa.Column("lift_operation_ids", JSON, nullable=True),
    )
    op.create_index("ix_policy_decisions_open", "policy_decisions", ["policy_id", "scope_value", "decided_at"])
    op.create_index("ix_policy_decisions_decided_at", "policy_decisions", ["decided_at"])
    op.create_table(
        "policy_matches",
        sa.Column("policy_id", sa.Uuid(), nullable=False),
        sa.Column("scope_value", sa.String(320), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("policy_id", "scope_value", "minute", name="pk_policy_matches"),
    )


def downgrade() -> None:
    op.drop_table("policy_matches")
    op.drop_table("policy_decisions")
    op.drop_table("policies")
    op.drop_table("domain_scores")
    with op.batch_alter_table("job_heartbeats") as batch:
        batch.drop_column("last_duration_ms")
