"""message_queue rows <-> ``MessageQueueItem``, and the filter/sort/keyset query over them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.model import (
    TERMINAL_STATUSES,
    BounceType,
    MessageQueueItem,
    MessageQueueStatus,
    QueueFilter,
    QueueSortField,
    QueueState,
    SmtpResponse,
    assume_utc,
    header,
    normalize_address,
)
from controlplane.db.engine import driver_connection
from controlplane.db.tables import MessageRow, search_text

TABLE = cast(Table, MessageRow.__table__)
COLUMNS = TABLE.c
# The statuses of a message still in a queue (not delivered, bounced, expired or cancelled).
IN_QUEUE = sorted(s.value for s in MessageQueueStatus if s not in TERMINAL_STATUSES)
# Struct field -> column, in Struct order; the one place the two are lined up.
STRUCT_COLUMNS: dict[str, str] = {f: ("metadata" if f == "metadata" else f) for f in MessageQueueItem.__struct_fields__}


def message_to_values(message: MessageQueueItem, *, now: datetime | None = None) -> dict[str, Any]:
    """Column values for one message (keys are column names)."""
    values = {column: getattr(message, field) for field, column in STRUCT_COLUMNS.items()}
    values["status"] = message.status.value
    values["queue_state"] = message.queue_state.value
    values["bounce_classification"] = message.bounce_classification.value if message.bounce_classification else None
    values["smtp_response"] = msgspec.to_builtins(message.smtp_response) if message.smtp_response else None
    values["recipient"] = normalize_address(message.recipient)
    values["sender"] = normalize_address(message.sender)
    values["domain"] = message.domain.lower()
    values["subject"] = header(message.headers, "Subject")
    values["updated_at"] = now or datetime.now(UTC)
    return values


def row_to_message(row: Row[Any] | Any) -> MessageQueueItem:
    m = row._mapping
    smtp = m["smtp_response"]
    classification = m["bounce_classification"]
    return MessageQueueItem(
        id=m["id"],
        message_id=m["message_id"],
        queue_name=m["queue_name"],
        recipient=m["recipient"],
        sender=m["sender"],
        domain=m["domain"],
        routing_domain=m["routing_domain"],
        campaign_id=m["campaign_id"],
        tenant_id=m["tenant_id"],
        pool_name=m["pool_name"],
        status=MessageQueueStatus(m["status"]),
        queue_state=QueueState(m["queue_state"]),
        priority=m["priority"],
        size_bytes=m["size_bytes"],
        num_attempts=m["num_attempts"],
        max_attempts=m["max_attempts"],
        last_attempt_at=m["last_attempt_at"],
        next_attempt_at=m["next_attempt_at"],
        last_bounce_reason=m["last_bounce_reason"],
        bounce_classification=BounceType(classification) if classification else None,
        created_at=m["created_at"],
        scheduled_at=m["scheduled_at"],
        delivered_at=m["delivered_at"],
        expires_at=m["expires_at"],
        smtp_response=msgspec.convert(smtp, SmtpResponse) if smtp else None,
        delivery_protocol=m["delivery_protocol"],
        headers=m["headers"],
        body_hash=m["body_hash"],
        attachment_count=m["attachment_count"],
        tags=list(m["tags"]) if m["tags"] is not None else None,
        metadata=m["metadata"],
    )


# Postgres: new messages are COPYed into a session-local staging table shaped like message_queue, then moved in by
# one constant INSERT ... SELECT ... ON CONFLICT DO NOTHING. The statement used to be a multi-VALUES INSERT of the
# whole batch, which SQLAlchemy compiled afresh for every batch: 8.7 of the 14.8 s a 10,000-row legacy import took.
NEW_STAGE_NAME = "message_queue_new"
_CREATE_NEW_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {NEW_STAGE_NAME} (LIKE message_queue INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS"
)
MESSAGE_COLUMNS: tuple[str, ...] = tuple(column.name for column in TABLE.columns)
_JSON_COLUMNS = frozenset({"smtp_response", "headers", "metadata"})  # jsonb on Postgres
_POSTGRES_MOVE_NEW = text(
    f"INSERT INTO message_queue SELECT * FROM {NEW_STAGE_NAME} ORDER BY id ON CONFLICT (id) DO NOTHING RETURNING id"
)
_EXISTING = select(COLUMNS.id).where(COLUMNS.id.in_(bindparam("ids", expanding=True)))
# Postgres takes the ids as one array: rendering and binding 5,000 placeholders was an eighth of a re-run.
_POSTGRES_EXISTING = select(COLUMNS.id).where(
    COLUMNS.id == func.any(bindparam("ids", type_=postgresql.ARRAY(COLUMNS.id.type)))
)
_SQLITE_INSERT = sqlite_insert(TABLE).on_conflict_do_nothing(index_elements=["id"])


async def existing_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``ids`` are stored (one indexed lookup each; the statement is compiled once and cached)."""
    if session.get_bind().dialect.name == "postgresql":
        return set((await session.scalars(_POSTGRES_EXISTING, {"ids": list(ids)})).all())
    found: set[uuid.UUID] = set()
    for start in range(0, len(ids), 10_000):  # SQLite binds at most 32,766 parameters per statement
        found.update((await session.scalars(_EXISTING, {"ids": list(ids[start : start + 10_000])})).all())
    return found


async def insert_new(session: AsyncSession, messages: Sequence[MessageQueueItem]) -> set[uuid.UUID]:
    """Insert messages whose id is not yet stored; returns the ids actually inserted (idempotent)."""
    if not messages:
        return set()
    now = datetime.now(UTC)
    if session.get_bind().dialect.name == "postgresql":
        records = [_copy_record(message_to_values(m, now=now)) for m in messages]
        await session.execute(text(_CREATE_NEW_STAGE))  # also begins the transaction on the server, as COPY needs
        connection = await driver_connection(session)
        await connection.copy_records_to_table(NEW_STAGE_NAME, records=records, columns=MESSAGE_COLUMNS)
        return set((await session.scalars(_POSTGRES_MOVE_NEW)).all())
    # SQLite: one prepared INSERT ... ON CONFLICT DO NOTHING run for every row (executemany). It cannot say which
    # rows it skipped, so the stored ids are looked up first. A writer storing one of the same ids between the
    # lookup and the insert would have its row kept and counted here as inserted: the count, not the data, is off.
    present = await existing_ids(session, [m.id for m in messages])
    fresh = [message_to_values(m, now=now) for m in messages if m.id not in present]
    if fresh:
        await session.execute(_SQLITE_INSERT, fresh)
    return {values["id"] for values in fresh}


def _copy_record(values: dict[str, Any]) -> tuple[Any, ...]:
    # COPY takes the driver's own values: asyncpg's jsonb codec takes JSON text; every column is given, so the
    # staged row is complete (the table defaults are the model's defaults, which message_to_values carries).
    return tuple(
        (None if values.get(name) is None else msgspec.json.encode(values[name]).decode())
        if name in _JSON_COLUMNS
        else values.get(name)
        for name in MESSAGE_COLUMNS
    )


async def fetch_by_ids(session: AsyncSession, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, MessageQueueItem]:
    found: dict[uuid.UUID, MessageQueueItem] = {}
    id_list = list(ids)
    for start in range(0, len(id_list), 500):
        chunk = id_list[start : start + 500]
        for row in await session.execute(select(TABLE).where(COLUMNS.id.in_(chunk))):
            found[row.id] = row_to_message(row)
    return found


def filter_conditions(query: QueueFilter, *, dialect: str) -> list[ColumnElement[bool]]:
    """SQL conditions for every set field of a ``QueueFilter`` (pagination fields excluded).

    Time ranges are half-open: ``*_after`` is inclusive, ``*_before`` exclusive, so adjacent ranges never overlap.
    ``tags`` matches messages carrying all the given tags; ``search_query`` is a case-insensitive substring match
    on recipient, sender and subject.
    """
    c = COLUMNS
    where: list[ColumnElement[bool]] = []
    if statuses := query.statuses():
        where.append(c.status.in_([s.value for s in statuses]))
    if states := query.queue_states():
        where.append(c.queue_state.in_([s.value for s in states]))
    if domains := query.all_domains():
        where.append(c.domain.in_(domains) if len(domains) > 1 else c.domain == domains[0])
    if query.sender is not None:
        where.append(c.sender == normalize_address(query.sender))
    if query.recipient is not None:
        where.append(c.recipient == normalize_address(query.recipient))
    for name in ("routing_domain", "campaign_id", "tenant_id", "pool_name"):
        value = getattr(query, name)
        if value is not None:
            where.append(c[name] == value)
    if query.created_after is not None:
        where.append(c.created_at >= assume_utc(query.created_after))
    if query.created_before is not None:
        where.append(c.created_at < assume_utc(query.created_before))
    if query.scheduled_after is not None:
        where.append(c.scheduled_at >= assume_utc(query.scheduled_after))
    if query.scheduled_before is not None:
        where.append(c.scheduled_at < assume_utc(query.scheduled_before))
    if query.search_query:
        pattern = "%" + _escape_like(query.search_query.lower()) + "%"
        where.append(search_text().like(pattern, escape="\\"))
    if query.tags:
        if dialect == "postgresql":
            where.append(type_coerce(c.tags, postgresql.ARRAY(Text)).contains(query.tags))
        else:
            each = func.json_each(c.tags).table_valued("value")
            where.extend(
                exists(select(literal_column("1")).select_from(each).where(each.c.value == t)) for t in query.tags
            )
    if query.min_attempts is not None:
        where.append(c.num_attempts >= query.min_attempts)
    if query.max_attempts is not None:
        where.append(c.num_attempts <= query.max_attempts)
    if query.bounce_type is not None:
        where.append(c.bounce_classification == query.bounce_type.value)
    if query.min_size_bytes is not None:
        where.append(c.size_bytes >= query.min_size_bytes)
    if query.max_size_bytes is not None:
        where.append(c.size_bytes <= query.max_size_bytes)
    if query.priority is not None:
        where.append(c.priority == query.priority)
    return where


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Only scheduled_at among the sort fields is nullable. NULL sorts as if larger than every value (last when
# ascending, first when descending), which is Postgres's native order, so a backward index scan serves "desc".
NULLABLE_SORT_FIELDS = frozenset({QueueSortField.scheduled_at})


def ordered_page(
    base: Select[Any],
    sort_by: QueueSortField,
    descending: bool,
    after: tuple[Any, uuid.UUID] | None,
    limit: int,
) -> Select[Any]:
    """Order by (sort field, id) and continue strictly after the keyset ``after``."""
    column = COLUMNS[sort_by.value]
    ident = COLUMNS.id
    if after is not None:
        value, last_id = after
        base = base.where(_after_condition(column, ident, value, last_id, descending, sort_by in NULLABLE_SORT_FIELDS))
    order = [column.desc().nulls_first(), ident.desc()] if descending else [column.asc().nulls_last(), ident.asc()]
    return base.order_by(*order).limit(limit)


def _after_condition(
    column: Any, ident: Any, value: Any, last_id: uuid.UUID, descending: bool, nullable: bool
) -> ColumnElement[bool]:
    if value is None:  # the previous page ended inside the NULL block
        if descending:
            return or_(and_(column.is_(None), ident < last_id), column.is_not(None))
        return and_(column.is_(None), ident > last_id)
    keyset = tuple_(column, ident)
    beyond = keyset < tuple_(value, last_id) if descending else keyset > tuple_(value, last_id)
    if nullable and not descending:
        return or_(beyond, column.is_(None))
    return beyond
