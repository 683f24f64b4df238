"""The schema as SQLAlchemy tables. Migrations in ``migrations/versions`` create exactly this (a test checks)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    Uuid,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from controlplane.db.types import JsonDocument, TextList, UtcDateTime, code_point_string


class Base(DeclarativeBase):
    pass


# Filter columns get a (column, created_at, id) index rather than the seed's single-column one: it answers the
# same equality lookups and also serves "filter + newest first + keyset cursor" as one index range scan, which
# is what keeps a filtered page fast at any depth even when the filtered value is rare.
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


# Filter indexes over only the rows a filter on a value can match: the column is at its default or empty for most
# messages, and every write of a row adds an entry to every index that covers it (migration 0009).
PARTIAL_FILTER_INDEXES = {
    "queue_state": "queue_state <> 'active'",
    "bounce_classification": "bounce_classification IS NOT NULL",
    "routing_domain": "routing_domain IS NOT NULL",
}
# The statuses of a message still in a queue, as SQL (``controlplane.db.messages.IN_QUEUE`` as a list).
QUEUED_CONDITION = "status IN ('deferred', 'in_delivery', 'ready', 'scheduled', 'suspended')"


class MessageRow(Base):
    """``message_queue``: seed 000 §6, plus ``subject`` (for search) and ``updated_at``."""

    __tablename__ = "message_queue"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998))
    queue_name: Mapped[str] = mapped_column(String(255))
    recipient: Mapped[str] = mapped_column(String(320))
    sender: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(255))
    routing_domain: Mapped[str | None] = mapped_column(String(255))
    campaign_id: Mapped[str | None] = mapped_column(String(100))
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    pool_name: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(50))
    queue_state: Mapped[str] = mapped_column(String(50), server_default="active")
    priority: Mapped[int] = mapped_column(Integer, server_default="5")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    num_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="20")
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_bounce_reason: Mapped[str | None] = mapped_column(Text)
    bounce_classification: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=func.now())
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    smtp_response: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    delivery_protocol: Mapped[str | None] = mapped_column(String(10), server_default="smtp")
    headers: Mapped[dict[str, str] | None] = mapped_column(JsonDocument)
    body_hash: Mapped[str | None] = mapped_column(String(64))
    attachment_count: Mapped[int | None] = mapped_column(Integer, server_default="0")
    tags: Mapped[list[str] | None] = mapped_column(TextList)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonDocument)
    subject: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=func.now())
    # Event times that order the mirror merge (adapters.model.observation): of the event that set the status,
    # of the latest response, of the latest failure.
    status_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    response_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_message_queue_created_at", "created_at", "id"),
        Index("ix_message_queue_scheduled_at", "scheduled_at", "id"),
        Index("ix_message_queue_num_attempts", "num_attempts", "id"),
        Index("ix_message_queue_size_bytes", "size_bytes", "id"),
        *(
            Index(
                f"ix_message_queue_{column}",
                column,
                "created_at",
                "id",
                postgresql_where=text(PARTIAL_FILTER_INDEXES[column]) if column in PARTIAL_FILTER_INDEXES else None,
                sqlite_where=text(PARTIAL_FILTER_INDEXES[column]) if column in PARTIAL_FILTER_INDEXES else None,
            )
            for column in FILTER_COLUMNS
        ),
        # Queued messages only (a small part of the mirror once mail flows): their oldest and newest for the
        # metrics, without walking the delivered ones.
        Index(
            "ix_message_queue_queued",
            "created_at",
            postgresql_where=text(QUEUED_CONDITION),
            sqlite_where=text(QUEUED_CONDITION),
        ),
    )


# Postgres-only indexes, created by the migration with raw DDL (an opclass on an expression is beyond Index()).
# The search expression below must stay identical to the indexed one, constants included, or the planner will not
# use the trigram index.
POSTGRES_ONLY_INDEXES = {
    "ix_message_queue_tags": "CREATE INDEX ix_message_queue_tags ON message_queue USING gin (tags)",
    "ix_message_queue_search": (
        "CREATE INDEX ix_message_queue_search ON message_queue USING gin "
        "((lower(recipient || ' ' || sender || ' ' || coalesce(subject, ''))) gin_trgm_ops)"
    ),
}


def search_text() -> ColumnElement[str]:
    """recipient, sender and subject as one lower-cased string: what ``search_query`` matches against."""
    space: ColumnElement[str] = literal_column("' '")
    return func.lower(
        MessageRow.recipient
        + space
        + MessageRow.sender
        + space
        + func.coalesce(MessageRow.subject, literal_column("''"))
    )


class EventRow(Base):
    """``events``: every MTA log record, once (keyed by a digest of its identity), verbatim in ``payload``.

    On Postgres it is partitioned by day on ``event_at`` (see ``controlplane.db.partitions``).
    """

    __tablename__ = "events"

    event_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dedupe_key: Mapped[bytes] = mapped_column(LargeBinary(16))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(String(20))
    type: Mapped[str] = mapped_column(String(40))
    message_uuid: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    mta_message_id: Mapped[str] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(320))
    sender: Mapped[str] = mapped_column(String(320))
    queue_name: Mapped[str] = mapped_column(String(255))
    domain: Mapped[str] = mapped_column(String(255))
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    campaign_id: Mapped[str | None] = mapped_column(String(100))
    response_code: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    # The event's place in the log, in commit order (``controlplane.projections.log``): on Postgres the id of the
    # transaction that wrote it (column default pg_current_xact_id()), on SQLite a counter (``event_log_clock``)
    # bumped by each write transaction. Projections read the log ordered by (tx, event_at, dedupe_key).
    tx: Mapped[int] = mapped_column(BigInteger)
    # The tenant of the tenant-bound key that posted it (None: an unbound key): the mirror applies such an event
    # only to that tenant's message.
    posted_by_tenant: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        # Led by event_at: new keys append at the index's right edge, and the key orders the /events listing.
        PrimaryKeyConstraint("event_at", "dedupe_key", name="pk_events"),
        Index("ix_events_log", "tx", "event_at", "dedupe_key"),
        Index("ix_events_message", "message_uuid", "event_at"),
        Index("ix_events_domain", "domain", "event_at"),
        Index("ix_events_tenant", "tenant_id", "event_at"),
    )


class DeadLetterRow(Base):
    """A record that could not be decoded or was refused, kept raw with the reason, for an operator to repair."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    source: Mapped[str] = mapped_column(String(20))
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    api_key: Mapped[str | None] = mapped_column(String(100))


class NodeRow(Base):
    """An MTA node of the fleet. ``credentials`` is AES-GCM ciphertext (``controlplane.fleet.secrets``)."""

    __tablename__ = "nodes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    base_url: Mapped[str] = mapped_column(String(500))
    auth_scheme: Mapped[str] = mapped_column(String(10))
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary)
    labels: Mapped[dict[str, str]] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reachable: Mapped[bool | None] = mapped_column(Boolean)
    version: Mapped[str | None] = mapped_column(String(100))
    health_detail: Mapped[str | None] = mapped_column(Text)
    last_synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sync_error: Mapped[str | None] = mapped_column(Text)
    # The node's traffic-shaping automation daemon, whose suspensions kumod does not list.
    tsa_url: Mapped[str | None] = mapped_column(String(500))


class NodeMessageRow(Base):
    """A mirrored message a node listed at its last sync (nodes that can list their queue: ZoneMTA). A message
    listed before and not now has left that node's queue (``fleet.state``)."""

    __tablename__ = "node_messages"

    node_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    message_uuid: Mapped[uuid.UUID] = mapped_column(Uuid)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime)  # first listed
    # The first listing that lacked it; a second listing without it marks it gone (one can miss a row: offset
    # paging over a queue that changes meanwhile).
    missing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (PrimaryKeyConstraint("node_id", "message_uuid", name="pk_node_messages"),)


class NodeQueuesRow(Base):
    """A node's queues as last read from it: messages per scheduled queue and per ready queue (egress path).

    One document per node, not a row per queue: a node can hold thousands of queues and every count changes from
    one sync to the next, so a row per queue meant rewriting ~200k rows every 15 s for 100 nodes of 2,000 queues
    (4-8 s of database work per sync); one row per node is 100 writes.
    """

    __tablename__ = "node_queues"

    node_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    scheduled: Mapped[dict[str, int]] = mapped_column(JsonDocument)
    ready: Mapped[dict[str, int]] = mapped_column(JsonDocument)


class NodeHoldRow(Base):
    """A suspension or standing bounce that exists on a node, as last read from it (the node's id for it kept)."""

    __tablename__ = "node_holds"
    __table_args__ = (PrimaryKeyConstraint("node_id", "kind", "hold_id"),)

    node_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(10))  # "suspension" | "bounce"
    hold_id: Mapped[str] = mapped_column(Text, index=True)
    source: Mapped[str] = mapped_column(String(10))  # "kumod" (admin API) | "tsa" (the shaping daemon's rules)
    reason: Mapped[str] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(Text)
    tenant: Mapped[str | None] = mapped_column(Text)
    campaign: Mapped[str | None] = mapped_column(Text)
    routing_domain: Mapped[str | None] = mapped_column(Text)
    # The exact scheduled queues, for a hold mtactl made by queue names (kumod's listing does not show them)
    queue_names: Mapped[list[str] | None] = mapped_column(JsonDocument)
    # When an operation recorded it (None: read by a sync); a sync that read the node earlier keeps the row
    recorded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ready_queue: Mapped[str | None] = mapped_column(Text)
    remaining: Mapped[str | None] = mapped_column(Text)
    total_bounced: Mapped[int] = mapped_column(BigInteger)


class OperationRow(Base):
    """A queue operation as asked and as answered, dry runs included."""

    __tablename__ = "operations"
    __table_args__ = (Index("ix_operations_tenant_id", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    # The tenant of the key that ran it (None: an unbound key): a tenant-bound key sees only its tenant's
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(20))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20))
    request: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)


class ApiKeyRow(Base):
    """API keys. Only a SHA-256 digest of the secret is stored (see ``controlplane.auth.service``)."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JsonDocument)
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditRow(Base):
    """Who did what, why, and what came of it. Append-only."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    success: Mapped[bool] = mapped_column(Boolean)


class JobHeartbeatRow(Base):
    """Last run of each background job, written by whichever runner (in-process or saq worker) ran it."""

    __tablename__ = "job_heartbeats"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    runner: Mapped[str] = mapped_column(String(50))
    last_run_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[float | None] = mapped_column(Float)  # of the last run, failed or not


class EventLogClockRow(Base):
    """SQLite only: the last ``events.tx`` handed out. SQLite runs one write transaction at a time, so a counter
    bumped inside each one orders the log by commit. (Postgres uses the writing transaction's id instead.)"""

    __tablename__ = "event_log_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tx: Mapped[int] = mapped_column(BigInteger)


class ProjectionCheckpointRow(Base):
    """How far each projection has applied the event log: the (tx, event_at, dedupe_key) of the last event it
    applied, written in the same transaction as what it applied."""

    __tablename__ = "projection_checkpoints"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    tx: Mapped[int] = mapped_column(BigInteger)
    event_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dedupe_key: Mapped[bytes] = mapped_column(LargeBinary(16))
    applied: Mapped[int] = mapped_column(BigInteger)  # events applied since the projection was (re)built
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


# The sums every counters table (message_counts, metrics_counts) keeps per row, as its columns are named.
COUNTED_SUMS = ("messages", "size_bytes", "retries", "retried", "created_seconds", "delivery_ms")


class MessageCountRow(Base):
    """Mirrored messages counted by queue, recipient domain, tenant, campaign, status, queue state and bounce class,
    with the sums the metrics need. Kept by triggers on ``message_queue`` (statement-level on Postgres, row-level
    on SQLite), so it is exact whichever writer changed the mirror (the mirror projection, a purge, the fleet
    sync, the legacy import). Absent tenant, campaign and class are stored as '' (key columns cannot be NULL)."""

    __tablename__ = "message_counts"
    __table_args__ = (
        PrimaryKeyConstraint(
            "queue_name",
            "domain",
            "tenant_id",
            "campaign_id",
            "status",
            "queue_state",
            "bounce_classification",
            name="pk_message_counts",
        ),
        # A tenant's queues as an index range, for its pages of GET /api/v1/queues.
        Index("ix_message_counts_tenant", "tenant_id", "queue_name"),
    )

    # In code point order (the key's leading column): pages of queues are merged with node-reported names in Python.
    queue_name: Mapped[str] = mapped_column(code_point_string(255))
    domain: Mapped[str] = mapped_column(String(255))
    tenant_id: Mapped[str] = mapped_column(String(100))
    campaign_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(50))
    queue_state: Mapped[str] = mapped_column(String(50))
    bounce_classification: Mapped[str] = mapped_column(String(50))
    messages: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    retries: Mapped[int] = mapped_column(BigInteger)  # attempts beyond the first
    retried: Mapped[int] = mapped_column(BigInteger)  # messages with more than one attempt
    created_seconds: Mapped[int] = mapped_column(BigInteger)  # sum of created_at, Unix seconds (for average age)
    delivery_ms: Mapped[int] = mapped_column(BigInteger)  # sum of delivered_at - created_at over delivered ones
    last_delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class MetricsCountRow(Base):
    """Mirrored messages counted by one dimension at a time (``dimension`` is ``tenant``, ``domain`` or ``campaign``,
    ``value`` its value, '' for an absent tenant or campaign), status and bounce class, with ``message_counts``'s
    sums: what ``GET /api/v1/metrics/queues`` adds up for the fleet, a tenant, a domain or a campaign. Kept by
    triggers on ``message_queue`` (migration 0015) fired by the same statements as ``message_counts``', so it is
    exact whichever writer changed the mirror."""

    __tablename__ = "metrics_counts"
    __table_args__ = (
        PrimaryKeyConstraint("dimension", "value", "status", "bounce_classification", name="pk_metrics_counts"),
    )

    dimension: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(50))
    bounce_classification: Mapped[str] = mapped_column(String(50))
    messages: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    retries: Mapped[int] = mapped_column(BigInteger)
    retried: Mapped[int] = mapped_column(BigInteger)
    created_seconds: Mapped[int] = mapped_column(BigInteger)
    delivery_ms: Mapped[int] = mapped_column(BigInteger)


class MetricsDepthRow(Base):
    """Queued messages of one dimension's value by another's: a tenant's by ``domain`` and by ``campaign``, a
    domain's by ``campaign`` (``breakdown``; ``item`` its value), which read the other way round are a campaign's by
    domain: the metrics' ``queue_depth_by_*`` for one tenant, domain or campaign. Messages without a campaign are in
    no row by campaign. Kept by the same triggers as ``metrics_counts``."""

    __tablename__ = "metrics_depths"
    __table_args__ = (PrimaryKeyConstraint("dimension", "value", "breakdown", "item", name="pk_metrics_depths"),)

    dimension: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    breakdown: Mapped[str] = mapped_column(String(16))
    item: Mapped[str] = mapped_column(String(255))
    messages: Mapped[int] = mapped_column(BigInteger)


class EventRollupRow(Base):
    """Per-minute counts of events, one dimension at a time: ``dimension`` is ``all`` (value ''), ``source``,
    ``domain``, ``tenant``, ``campaign``, ``egress_source``, ``egress_pool``, ``node`` or ``bounce_class``;
    ``metric`` is a record type (``Delivery``, ``Bounce``, …) or a delivery-time bucket ``delivery_le_<s>``
    (deliveries that took at most <s> seconds since reception, not cumulative: ``delivery_le_inf`` is the rest).
    Kept by the ``rollups`` projection."""

    __tablename__ = "event_rollups"
    __table_args__ = (PrimaryKeyConstraint("dimension", "value", "metric", "minute", name="pk_event_rollups"),)

    dimension: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(320))
    metric: Mapped[str] = mapped_column(String(40))
    minute: Mapped[datetime] = mapped_column(UtcDateTime)
    events: Mapped[int] = mapped_column(BigInteger)


class SourceRow(Base):
    """An egress source's daily limit and sending window (KumoMTA egress source, ZoneMTA zone)."""

    __tablename__ = "sources"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    daily_limit: Mapped[int] = mapped_column(BigInteger)
    window_start: Mapped[str] = mapped_column(String(5))
    window_end: Mapped[str] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64))
    nodes: Mapped[list[str]] = mapped_column(JsonDocument)  # node refs it is held on (empty: every node)
    tenants: Mapped[list[str]] = mapped_column(JsonDocument)  # tenants sending through it (empty: every tenant)
    pools: Mapped[list[str]] = mapped_column(JsonDocument)  # pools whose queued messages it carries
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SourceHoldRow(Base):
    """One egress path mtactl holds for a source on one node, with the MTA's id for the hold. ``lifted_at`` set:
    someone else lifted it before ``held_until`` (an operator's resume), and mtactl leaves the path alone until
    that hold would have ended."""

    __tablename__ = "source_holds"
    __table_args__ = (PrimaryKeyConstraint("source", "node_id", "path", name="pk_source_holds"),)

    source: Mapped[str] = mapped_column(String(200))
    node_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    path: Mapped[str] = mapped_column(String(500))
    hold_id: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    held_at: Mapped[datetime] = mapped_column(UtcDateTime)
    held_until: Mapped[datetime] = mapped_column(UtcDateTime)
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DomainScoreRow(Base):
    """The health of one recipient domain over the scoring window, fleet-wide (``tenant`` '') or for one tenant's
    mail to it. Written whole by the ``score_domains`` job from the rollups (controlplane.domains)."""

    __tablename__ = "domain_scores"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "domain", name="pk_domain_scores"),
        Index("ix_domain_scores_score", "tenant", "score", "domain"),
    )

    tenant: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(320))
    score: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(BigInteger)
    delivered: Mapped[int] = mapped_column(BigInteger)
    bounced: Mapped[int] = mapped_column(BigInteger)
    deferred: Mapped[int] = mapped_column(BigInteger)
    complaints: Mapped[int] = mapped_column(BigInteger)
    average_delivery_time: Mapped[float] = mapped_column(Float)
    last_successful_delivery: Mapped[datetime | None] = mapped_column(UtcDateTime)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PolicyRow(Base):
    """A throttling rule (controlplane.policies): when ``metric`` for a value of ``scope`` crosses ``threshold``
    over ``window``, ``action`` for ``duration``; ``mode`` observe only records it."""

    __tablename__ = "policies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    metric: Mapped[str] = mapped_column(String(20))
    pattern: Mapped[str | None] = mapped_column(Text)
    threshold: Mapped[float] = mapped_column(Float)
    window: Mapped[str] = mapped_column(String(50))
    min_events: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(20))
    match: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    action: Mapped[str] = mapped_column(String(20))
    duration: Mapped[str] = mapped_column(String(50))
    mode: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PolicyDecisionRow(Base):
    """One rule tripping for one value of its scope, what it did (or in observe mode would have done), and when it
    was lifted and by whom (``lifted_by``: ``policy`` at the end of the duration, ``operator`` when someone else
    lifted the suspension first)."""

    __tablename__ = "policy_decisions"
    __table_args__ = (
        Index("ix_policy_decisions_open", "policy_id", "scope_value", "decided_at"),
        Index("ix_policy_decisions_decided_at", "decided_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    policy_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    policy_name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(20))
    scope_value: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(20))
    mode: Mapped[str] = mapped_column(String(10))
    metric_value: Mapped[float] = mapped_column(Float)
    events: Mapped[int] = mapped_column(BigInteger)
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)
    until: Mapped[datetime] = mapped_column(UtcDateTime)
    operation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # [[node id, suspension id], ...]: what the operation created, to lift exactly that and nothing else
    holds: Mapped[list[Any] | None] = mapped_column(JsonDocument)
    note: Mapped[str | None] = mapped_column(Text)
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lifted_by: Mapped[str | None] = mapped_column(String(20))
    lift_operation_ids: Mapped[list[Any] | None] = mapped_column(JsonDocument)


class PolicyMatchRow(Base):
    """Per minute, the events whose response matched a ``response_match`` rule's pattern, per value of its scope.
    Kept by the ``policy_matches`` projection."""

    __tablename__ = "policy_matches"
    __table_args__ = (PrimaryKeyConstraint("policy_id", "scope_value", "minute", name="pk_policy_matches"),)

    policy_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    scope_value: Mapped[str] = mapped_column(String(320))
    minute: Mapped[datetime] = mapped_column(UtcDateTime)
    events: Mapped[int] = mapped_column(BigInteger)


# An address is at most 64 + 1 + 255 characters as given; lower-casing its domain can lengthen it (U+0130 becomes
# two characters), so the columns leave room for that.
EMAIL_WIDTH = 640
DOMAIN_WIDTH = 520


class SuppressionRow(Base):
    """One suppression-list entry: an address mtactl's fleet must not send to, globally (``tenant_id`` None) or
    for one tenant. ``scope_key`` is the tenant or '' (a key column cannot be NULL), so an address has one entry
    per scope. ``enforced_at``: when its enforcement (the ZoneMTA push, the cancellation of queued messages) ran;
    None for an entry the projection made that the ``enforce_suppressions`` job has not reached yet."""

    __tablename__ = "suppressions"
    __table_args__ = (
        PrimaryKeyConstraint("email", "scope_key", name="pk_suppressions"),
        Index("ix_suppressions_created", "created_at", "email", "scope_key"),
        Index("ix_suppressions_expires", "expires_at"),
        # The entries enforce_pending still has to reach, oldest first, without walking past every entry enforced
        # before them (all of them, once the list is large).
        Index(
            "ix_suppressions_pending",
            "created_at",
            postgresql_where=text("enforced_at IS NULL"),
            sqlite_where=text("enforced_at IS NULL"),
        ),
    )

    email: Mapped[str] = mapped_column(String(EMAIL_WIDTH))
    scope_key: Mapped[str] = mapped_column(String(100))
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(DOMAIN_WIDTH), index=True)
    reason: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    source_event_id: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    enforced_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    held_messages: Mapped[list[str] | None] = mapped_column(JsonDocument)
    cancel_operation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # A removed entry stays as a tombstone: a rebuild of the projection does not bring it back from the events
    # that caused it, while an event after the removal suppresses the address again.
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    removed_by: Mapped[str | None] = mapped_column(String(200))


class SuppressionPushRow(Base):
    """An address mtactl put on a node's own suppression list (ZoneMTA's ``/suppressionlist``), with the node's id
    for it (needed to take it off again)."""

    __tablename__ = "suppression_pushes"
    __table_args__ = (PrimaryKeyConstraint("node_id", "email", name="pk_suppression_pushes"),)

    node_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    email: Mapped[str] = mapped_column(String(EMAIL_WIDTH))
    reference: Mapped[str] = mapped_column(String(100))
    pushed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SoftBounceRow(Base):
    """Soft bounces per address, one row per event (keyed by its identity, so a replay adds nothing), kept while
    they can still count towards the threshold of ``MTACTL_SOFT_BOUNCE_THRESHOLD`` within the window. Counted per
    ``scope``: '' for what unbound keys (the MTAs) posted, else the tenant whose bound key posted it, so one
    tenant's events never make another tenant's entry, nor a global one."""

    __tablename__ = "suppression_soft_bounces"
    __table_args__ = (PrimaryKeyConstraint("scope", "email", "dedupe_key", name="pk_suppression_soft_bounces"),)

    scope: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(EMAIL_WIDTH))
    dedupe_key: Mapped[bytes] = mapped_column(LargeBinary(16))
    event_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
