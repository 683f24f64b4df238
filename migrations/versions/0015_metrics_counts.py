"""Counters for ``GET /api/v1/metrics/queues`` that are not keyed by queue, kept by triggers on ``message_queue``
fired by the same statements as ``message_counts``' (0008), so they are exact whoever writes the mirror.

* ``metrics_counts``: messages by one dimension at a time (``tenant``, ``domain``, ``campaign``; absent tenant
  and campaign are ''), status and bounce class, with ``message_counts``'s sums. A message is counted once per
  dimension, so the rows of one dimension add up to the fleet.
* ``metrics_depths``: queued messages of one dimension's value by another's (a tenant's by domain and by campaign,
  a domain's by campaign): the breakdowns; a campaign's by domain is read from the domains' rows. Messages without
  a campaign are not kept there (no breakdown by campaign shows them).

``message_counts`` has a row per queue, status, queue state and class (about 480,000 at 2M messages in 250,000
queues, ``bench/list_messages.py``); these have a row per tenant, domain or campaign, status and class (15,400
there) and a row per pair while it has queued messages (53,400). Both are filled here from the messages already
mirrored (7.5 s at those 2M).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

QUEUED = "('deferred', 'in_delivery', 'ready', 'scheduled', 'suspended')"
COUNT_KEY = ("dimension", "value", "status", "bounce_classification")
SUMS = ("messages", "size_bytes", "retries", "retried", "created_seconds", "delivery_ms")
DEPTH_KEY = ("dimension", "value", "breakdown", "item")
# (dimension, its column, breakdown, its column) of every metrics_depths row a queued message adds to. No row
# (campaign, domain): a campaign's depth by domain is read from the (domain, campaign) rows, a scan of one pair set
# (23,000 rows at 2M messages) instead of a fourth row written per queued message (4.5 µs per event of the mirror
# projection's Postgres CPU, bench/projections.py).
PAIRS = (
    ("tenant", "tenant_id", "domain", "domain"),
    ("tenant", "tenant_id", "campaign", "campaign_id"),
    ("domain", "domain", "campaign", "campaign_id"),
)
DIMENSIONS = (("tenant", "tenant_id"), ("domain", "domain"), ("campaign", "campaign_id"))
TRIGGERS = {
    "insert": "REFERENCING NEW TABLE AS new_rows",
    "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "REFERENCING OLD TABLE AS old_rows",
}


def _contribution_pg(rows: str, sign: int) -> str:
    """What each row of ``rows`` adds (sign 1) to or takes (-1) from its counters, as 0008 computes them."""
    return (
        f"SELECT coalesce(tenant_id, '') AS tenant_id, domain, coalesce(campaign_id, '') AS campaign_id, status, "
        f"coalesce(bounce_classification, '') AS bounce_classification, {sign}::bigint AS messages, "
        f"{sign} * size_bytes AS size_bytes, {sign} * greatest(num_attempts - 1, 0) AS retries, "
        f"{sign} * (num_attempts > 1)::int AS retried, "
        f"{sign} * floor(extract(epoch from created_at))::bigint AS created_seconds, "
        f"{sign} * CASE WHEN status = 'delivered' AND delivered_at IS NOT NULL "
        f"THEN round(extract(epoch from (delivered_at - created_at)) * 1000)::bigint ELSE 0 END AS delivery_ms "
        f"FROM {rows}"
    )


def _apply_pg(contributions: str) -> str:
    """Both tables' upserts, one statement: the rows are read once, each table gets one aggregated upsert, sorted
    by key (concurrent writers lock counter rows in one order), without the keys whose changes cancel out."""
    key = ", ".join(COUNT_KEY)
    sums = ", ".join(f"sum(d.{name})" for name in SUMS)
    changed = " OR ".join(f"sum(d.{name}) <> 0" for name in SUMS)
    updates = ", ".join(f"{name} = c.{name} + excluded.{name}" for name in SUMS)
    dimensions = ", ".join(f"('{name}', d.{column})" for name, column in DIMENSIONS)
    pairs = ", ".join(f"('{a}', d.{ca}, '{b}', d.{cb})" for a, ca, b, cb in PAIRS)
    depth_key = ", ".join(DEPTH_KEY)
    return (
        f"WITH d AS MATERIALIZED ({contributions}), "
        f"counted AS (INSERT INTO metrics_counts AS c ({key}, {', '.join(SUMS)}) "
        f"SELECT v.dimension, v.value, d.status, d.bounce_classification, {sums} "
        f"FROM d CROSS JOIN LATERAL (VALUES {dimensions}) AS v (dimension, value) "
        f"GROUP BY 1, 2, 3, 4 HAVING {changed} ORDER BY 1, 2, 3, 4 "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}) "
        f"INSERT INTO metrics_depths AS c ({depth_key}, messages) "
        f"SELECT p.dimension, p.value, p.breakdown, p.item, sum(d.messages) "
        f"FROM d CROSS JOIN LATERAL (VALUES {pairs}) AS p (dimension, value, breakdown, item) "
        f"WHERE d.status IN {QUEUED} AND (p.breakdown <> 'campaign' OR p.item <> '') "
        f"GROUP BY 1, 2, 3, 4 HAVING sum(d.messages) <> 0 ORDER BY 1, 2, 3, 4 "
        f"ON CONFLICT ({depth_key}) DO UPDATE SET messages = c.messages + excluded.messages"
    )


PG_FUNCTIONS = {
    "insert": _apply_pg(_contribution_pg("new_rows", 1)),
    "update": _apply_pg(f"{_contribution_pg('old_rows', -1)} UNION ALL {_contribution_pg('new_rows', 1)}"),
    "delete": _apply_pg(_contribution_pg("old_rows", -1)),
}

# SQLite, row by row: the same values from NEW or OLD.
SQLITE_DELIVERY_MS = (
    "CASE WHEN {row}.status = 'delivered' AND {row}.delivered_at IS NOT NULL THEN "
    "CAST(round((julianday({row}.delivered_at) - julianday({row}.created_at)) * 86400000) AS INTEGER) ELSE 0 END"
)
# An update that changes none of these leaves every counter as it was: the trigger does not fire for it.
COUNTED_COLUMNS = (
    "tenant_id",
    "domain",
    "campaign_id",
    "status",
    "bounce_classification",
    "size_bytes",
    "num_attempts",
    "created_at",
    "delivered_at",
)


def _sqlite_changes(row: str, sign: str) -> str:
    def value(column: str) -> str:
        return f"coalesce({row}.{column}, '')" if column != "domain" else f"{row}.domain"

    bounce = value("bounce_classification")
    statements = []
    # Not INSERT OR IGNORE nor an upsert: inside a trigger the outer statement's conflict handling (the mirror's
    # upsert) replaces the trigger's own (see 0008).
    for dimension, column in DIMENSIONS:
        where = (
            f"dimension = '{dimension}' AND value = {value(column)} AND status = {row}.status "
            f"AND bounce_classification = {bounce}"
        )
        statements.append(
            f"INSERT INTO metrics_counts ({', '.join(COUNT_KEY)}, {', '.join(SUMS)}) "
            f"SELECT '{dimension}', {value(column)}, {row}.status, {bounce}, 0, 0, 0, 0, 0, 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM metrics_counts WHERE {where})"
        )
        statements.append(
            f"UPDATE metrics_counts SET messages = messages {sign} 1, "
            f"size_bytes = size_bytes {sign} {row}.size_bytes, "
            f"retries = retries {sign} max({row}.num_attempts - 1, 0), "
            f"retried = retried {sign} ({row}.num_attempts > 1), "
            f"created_seconds = created_seconds {sign} CAST(strftime('%s', {row}.created_at) AS INTEGER), "
            f"delivery_ms = delivery_ms {sign} {SQLITE_DELIVERY_MS.format(row=row)} WHERE {where}"
        )
    for dimension, column, breakdown, item_column in PAIRS:
        kept = f"{row}.status IN {QUEUED}" + (f" AND {value(item_column)} <> ''" if breakdown == "campaign" else "")
        where = (
            f"dimension = '{dimension}' AND value = {value(column)} AND breakdown = '{breakdown}' "
            f"AND item = {value(item_column)}"
        )
        statements.append(
            f"INSERT INTO metrics_depths ({', '.join(DEPTH_KEY)}, messages) "
            f"SELECT '{dimension}', {value(column)}, '{breakdown}', {value(item_column)}, 0 "
            f"WHERE {kept} AND NOT EXISTS (SELECT 1 FROM metrics_depths WHERE {where})"
        )
        statements.append(f"UPDATE metrics_depths SET messages = messages {sign} 1 WHERE {kept} AND {where}")
    return "; ".join(statements) + ";"


def _sqlite_trigger(operation: str) -> str:
    body = {
        "insert": _sqlite_changes("NEW", "+"),
        "update": _sqlite_changes("OLD", "-") + " " + _sqlite_changes("NEW", "+"),
        "delete": _sqlite_changes("OLD", "-"),
    }[operation]
    when = ""
    if operation == "update":
        when = "WHEN " + " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in COUNTED_COLUMNS) + " "
    return (
        f"CREATE TRIGGER metrics_counts_{operation} AFTER {operation.upper()} ON message_queue "
        f"FOR EACH ROW {when}BEGIN {body} END"
    )


def _fill(postgres: bool) -> None:
    """Both tables from what is mirrored now: the messages grouped by (tenant, domain, campaign, status, class)
    once, then added up per dimension and per pair."""
    if postgres:
        grouped = (
            "SELECT tenant_id, domain, campaign_id, status, bounce_classification, sum(messages) AS messages, "
            "sum(size_bytes) AS size_bytes, sum(retries) AS retries, sum(retried) AS retried, "
            "sum(created_seconds) AS created_seconds, sum(delivery_ms) AS delivery_ms "
            f"FROM ({_contribution_pg('message_queue', 1)}) AS m GROUP BY 1, 2, 3, 4, 5"
        )
        op.execute(_apply_pg(grouped))
        return
    grouped = (
        "SELECT coalesce(tenant_id, '') AS tenant_id, domain, coalesce(campaign_id, '') AS campaign_id, status, "
        "coalesce(bounce_classification, '') AS bounce_classification, count(*) AS messages, "
        "sum(size_bytes) AS size_bytes, sum(max(num_attempts - 1, 0)) AS retries, "
        "sum(num_attempts > 1) AS retried, sum(CAST(strftime('%s', created_at) AS INTEGER)) AS created_seconds, "
        f"sum({SQLITE_DELIVERY_MS.format(row='message_queue')}) AS delivery_ms "
        "FROM message_queue GROUP BY 1, 2, 3, 4, 5"
    )
    sums = ", ".join(f"sum({name})" for name in SUMS)
    for dimension, column in DIMENSIONS:
        op.execute(
            f"INSERT INTO metrics_counts SELECT '{dimension}', {column}, status, bounce_classification, {sums} "
            f"FROM ({grouped}) GROUP BY 2, 3, 4"
        )
    for dimension, column, breakdown, item_column in PAIRS:
        kept = f" AND {item_column} <> ''" if breakdown == "campaign" else ""
        op.execute(
            f"INSERT INTO metrics_depths SELECT '{dimension}', {column}, '{breakdown}', {item_column}, "
            f"sum(messages) FROM ({grouped}) WHERE status IN {QUEUED}{kept} GROUP BY 2, 4"
        )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "metrics_counts",
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("bounce_classification", sa.String(50), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint(*COUNT_KEY, name="pk_metrics_counts"),
    )
    op.create_table(
        "metrics_depths",
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("breakdown", sa.String(16), nullable=False),
        sa.Column("item", sa.String(255), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*DEPTH_KEY, name="pk_metrics_depths"),
    )
    # The triggers first: creating one waits for the mirror's writers in flight and keeps new ones out until this
    # transaction commits, so the fill below counts every message once (on SQLite the migration holds the write
    # lock throughout).
    if postgres:
        for operation, statement in PG_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION metrics_counts_on_{operation}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {statement}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER metrics_counts_{operation} AFTER {operation.upper()} ON message_queue "
                f"{TRIGGERS[operation]} FOR EACH STATEMENT EXECUTE FUNCTION metrics_counts_on_{operation}()"
            )
    else:
        for operation in TRIGGERS:
            op.execute(_sqlite_trigger(operation))
    _fill(postgres)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for operation in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS metrics_counts_{operation}" + (" ON message_queue" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS metrics_counts_on_{operation}()")
    op.drop_table("metrics_depths")
    op.drop_table("metrics_counts")
