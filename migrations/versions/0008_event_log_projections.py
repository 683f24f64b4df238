"""The event log is the truth: events get their commit-ordered place in the log (tx), projections their durable
checkpoints, and the counters their tables.

* ``events.tx``: Postgres fills it with the writing transaction's id (``pg_current_xact_id()``); SQLite writers take
  it from ``event_log_clock``. Events stored before this revision get 0: the message mirror has applied them
  already (it was written with them), so its checkpoint starts past every tx 0; the rollups start at the beginning
  and count them.
* ``message_counts`` follows ``message_queue`` through triggers (statement-level with transition tables on
  Postgres: one aggregated upsert per statement, not one per row; row-level on SQLite), filled here from the
  messages already mirrored.
* ``event_rollups``: per-minute counts, kept by the rollups projection.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

QUEUED_CONDITION = "status IN ('deferred', 'in_delivery', 'ready', 'scheduled', 'suspended')"
KEY = ("queue_name", "domain", "tenant_id", "campaign_id", "status", "queue_state", "bounce_classification")
KEY_WIDTHS = (255, 255, 100, 100, 50, 50, 50)
SUMS = ("messages", "size_bytes", "retries", "retried", "created_seconds", "delivery_ms")


def _contribution_pg(rows: str, sign: int) -> str:
    """What each row of ``rows`` adds (sign 1) to or takes (-1) from its message_counts row, on Postgres."""
    return (
        f"SELECT queue_name, domain, coalesce(tenant_id, ''), coalesce(campaign_id, ''), status, queue_state, "
        f"coalesce(bounce_classification, ''), {sign}::bigint, {sign} * size_bytes, "
        f"{sign} * greatest(num_attempts - 1, 0), {sign} * (num_attempts > 1)::int, "
        f"{sign} * floor(extract(epoch from created_at))::bigint, "
        f"{sign} * CASE WHEN status = 'delivered' AND delivered_at IS NOT NULL "
        f"THEN round(extract(epoch from (delivered_at - created_at)) * 1000)::bigint ELSE 0 END, "
        f"CASE WHEN {sign} = 1 AND status = 'delivered' THEN delivered_at END "
        f"FROM {rows}"
    )


def _apply_pg(contributions: str) -> str:
    key = ", ".join(KEY)
    sums = ", ".join(f"sum({name})" for name in SUMS)
    changed = " OR ".join(f"sum({name}) <> 0" for name in SUMS)
    updates = ", ".join(f"{name} = c.{name} + excluded.{name}" for name in SUMS)
    columns = f"{key}, {', '.join(SUMS)}, last_delivered_at"
    # Sorted by key: concurrent statements (the mirror projection, a purge) lock count rows in one order.
    return (
        f"INSERT INTO message_counts AS c ({columns}) "
        f"SELECT {key}, {sums}, max(last_delivered_at) FROM ({contributions}) AS d ({columns}) "
        f"GROUP BY {key} HAVING {changed} OR max(last_delivered_at) IS NOT NULL ORDER BY {key} "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}, "
        f"last_delivered_at = greatest(c.last_delivered_at, excluded.last_delivered_at)"
    )


PG_FUNCTIONS = {
    "insert": _apply_pg(_contribution_pg("new_rows", 1)),
    "update": _apply_pg(f"{_contribution_pg('old_rows', -1)} UNION ALL {_contribution_pg('new_rows', 1)}"),
    "delete": _apply_pg(_contribution_pg("old_rows", -1)),
}
PG_REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
}


def _sqlite_trigger(operation: str) -> str:
    def key(row: str) -> str:
        return (
            f"queue_name = {row}.queue_name AND domain = {row}.domain AND tenant_id = coalesce({row}.tenant_id, '') "
            f"AND campaign_id = coalesce({row}.campaign_id, '') AND status = {row}.status "
            f"AND queue_state = {row}.queue_state "
            f"AND bounce_classification = coalesce({row}.bounce_classification, '')"
        )

    def change(row: str, sign: str) -> str:
        delivery = (
            f"CASE WHEN {row}.status = 'delivered' AND {row}.delivered_at IS NOT NULL THEN "
            f"CAST(round((julianday({row}.delivered_at) - julianday({row}.created_at)) * 86400000) AS INTEGER) "
            "ELSE 0 END"
        )
        last = (
            f"CASE WHEN {row}.status = 'delivered' AND {row}.delivered_at IS NOT NULL AND "
            f"(last_delivered_at IS NULL OR {row}.delivered_at > last_delivered_at) THEN {row}.delivered_at "
            "ELSE last_delivered_at END"
        )
        # Not INSERT OR IGNORE: inside a trigger the outer statement's conflict handling (the mirror's upsert)
        # replaces the trigger's own, and the duplicate key would fail it.
        return (
            f"INSERT INTO message_counts ({', '.join(KEY)}, {', '.join(SUMS)}) SELECT {row}.queue_name, "
            f"{row}.domain, coalesce({row}.tenant_id, ''), coalesce({row}.campaign_id, ''), {row}.status, "
            f"{row}.queue_state, coalesce({row}.bounce_classification, ''), 0, 0, 0, 0, 0, 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM message_counts WHERE {key(row)}); "
            f"UPDATE message_counts SET messages = messages {sign} 1, size_bytes = size_bytes {sign} {row}.size_bytes, "
            f"retries = retries {sign} max({row}.num_attempts - 1, 0), "
            f"retried = retried {sign} ({row}.num_attempts > 1), "
            f"created_seconds = created_seconds {sign} CAST(strftime('%s', {row}.created_at) AS INTEGER), "
            f"delivery_ms = delivery_ms {sign} {delivery}"
            + (f", last_delivered_at = {last}" if sign == "+" else "")
            + f" WHERE {key(row)};"
        )

    body = {
        "insert": change("NEW", "+"),
        "update": change("OLD", "-") + " " + change("NEW", "+"),
        "delete": change("OLD", "-"),
    }[operation]
    return (
        f"CREATE TRIGGER message_counts_{operation} AFTER {operation.upper()} ON message_queue "
        f"FOR EACH ROW BEGIN {body} END"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # Metadata-only on Postgres: existing rows read the default 0, nothing is rewritten.
        op.execute("ALTER TABLE events ADD COLUMN tx bigint NOT NULL DEFAULT 0")
        op.execute("ALTER TABLE events ALTER COLUMN tx SET DEFAULT (pg_current_xact_id()::text::bigint)")
    else:
        op.add_column("events", sa.Column("tx", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("events", sa.Column("posted_by_tenant", sa.String(100)))
    op.create_index("ix_events_log", "events", ["tx", "event_at", "dedupe_key"])
    queued = sa.text(QUEUED_CONDITION)
    op.create_index(
        "ix_message_queue_queued", "message_queue", ["created_at"], postgresql_where=queued, sqlite_where=queued
    )

    op.create_table(
        "event_log_clock",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tx", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO event_log_clock (id, tx) VALUES (1, 0)")
    checkpoints = op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("tx", sa.BigInteger(), nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dedupe_key", sa.LargeBinary(16), nullable=False),
        sa.Column("applied", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Every event stored so far is in the mirror already (it was written in the same transaction).
    start = datetime(1, 1, 1, tzinfo=UTC) if postgres else datetime(1, 1, 1)
    now = datetime.now(UTC) if postgres else datetime.now(UTC).replace(tzinfo=None)
    op.bulk_insert(
        checkpoints,
        [{"name": "mirror", "tx": 1, "event_at": start, "dedupe_key": b"", "applied": 0, "updated_at": now}],
    )

    op.create_table(
        "message_counts",
        *(sa.Column(name, sa.String(width), nullable=False) for name, width in zip(KEY, KEY_WIDTHS, strict=True)),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint(*KEY, name="pk_message_counts"),
    )
    op.create_table(
        "event_rollups",
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("value", sa.String(320), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dimension", "value", "metric", "minute", name="pk_event_rollups"),
    )

    if postgres:
        for operation, statement in PG_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION message_counts_on_{operation}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {statement}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER message_counts_{operation} AFTER {operation.upper()} ON message_queue "
                f"{PG_REFERENCING[operation]} FOR EACH STATEMENT EXECUTE FUNCTION message_counts_on_{operation}()"
            )
        op.execute(PG_FUNCTIONS["insert"].replace("new_rows", "message_queue"))
    else:
        for operation in ("insert", "update", "delete"):
            op.execute(_sqlite_trigger(operation))
        # The same sums as the triggers keep, over what is mirrored now.
        op.execute(
            "INSERT INTO message_counts SELECT queue_name, domain, coalesce(tenant_id, ''), coalesce(campaign_id, ''), "
            "status, queue_state, coalesce(bounce_classification, ''), count(*), sum(size_bytes), "
            "sum(max(num_attempts - 1, 0)), sum(num_attempts > 1), sum(CAST(strftime('%s', created_at) AS INTEGER)), "
            "sum(CASE WHEN status = 'delivered' AND delivered_at IS NOT NULL THEN "
            "CAST(round((julianday(delivered_at) - julianday(created_at)) * 86400000) AS INTEGER) ELSE 0 END), "
            "max(CASE WHEN status = 'delivered' THEN delivered_at END) FROM message_queue "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for operation in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS message_counts_{operation}" + (" ON message_queue" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS message_counts_on_{operation}()")
    op.drop_table("event_rollups")
    op.drop_table("message_counts")
    op.drop_table("projection_checkpoints")
    op.drop_table("event_log_clock")
    op.drop_index("ix_message_queue_queued", table_name="message_queue")
    op.drop_index("ix_events_log", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("posted_by_tenant")
        batch.drop_column("tx")
