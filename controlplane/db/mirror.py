"""Applying ``MessageObservation``s to ``message_queue``: one upsert whose SET clause is the merge rule of
``adapters.model.observation`` written in SQL, so stored row ⊕ new observation = merge(stored, new)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Text,
    Uuid,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.model import TERMINAL_STATUSES, QueueState, header
from adapters.model.observation import EPOCH, MessageObservation, merge
from controlplane.db.messages import COLUMNS, TABLE
from controlplane.db.types import UtcDateTime

TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
DEFAULT_PRIORITY = 5
DEFAULT_MAX_ATTEMPTS = 20


def combine(observations: Iterable[MessageObservation]) -> list[MessageObservation]:
    """One observation per message: merge those of the same message first (an upsert may touch a row once)."""
    by_id: dict[Any, MessageObservation] = {}
    for observation in observations:
        seen = by_id.get(observation.id)
        by_id[observation.id] = observation if seen is None else merge(seen, observation)
    return list(by_id.values())


def _values(observation: MessageObservation, now: datetime) -> dict[str, Any]:
    return {
        "id": observation.id,
        "message_id": observation.message_id,
        "queue_name": observation.queue_name,
        "recipient": observation.recipient,
        "sender": observation.sender,
        "domain": observation.domain,
        "routing_domain": observation.routing_domain,
        "campaign_id": observation.campaign_id,
        "tenant_id": observation.tenant_id,
        "pool_name": observation.pool_name,
        "status": observation.status.value,
        "status_at": observation.status_at,
        "queue_state": QueueState.active.value,
        "priority": DEFAULT_PRIORITY,
        "size_bytes": observation.size_bytes,
        "num_attempts": observation.num_attempts,
        "max_attempts": DEFAULT_MAX_ATTEMPTS,
        "last_attempt_at": observation.last_attempt_at,
        "created_at": observation.created_at,
        "delivered_at": observation.delivered_at,
        "response_at": observation.response_at,
        "smtp_response": msgspec.to_builtins(observation.smtp_response) if observation.smtp_response else None,
        "delivery_protocol": observation.delivery_protocol,
        "failure_at": observation.failure_at,
        "last_bounce_reason": observation.last_bounce_reason,
        "bounce_classification": observation.bounce_classification.value if observation.bounce_classification else None,
        "headers": observation.headers,
        "metadata": observation.metadata,
        "subject": header(observation.headers, "Subject"),
        "updated_at": now,
    }


def _merge_clause(excluded: Any) -> dict[str, Any]:
    new, old = excluded, COLUMNS
    floor = literal(EPOCH, UtcDateTime())

    # Inline constants: an expanding IN list cannot be used with executemany.
    terminal_names: list[ColumnElement[Any]] = [literal_column(f"'{name}'") for name in TERMINAL]

    def terminal(column: Any) -> ColumnElement[int]:
        return case((column.in_(terminal_names), literal_column("1")), else_=literal_column("0"))

    def latest(a: Any, b: Any) -> ColumnElement[Any]:
        return case((a.is_(None), b), (b.is_(None), a), (a > b, a), else_=b)

    def earliest(a: Any, b: Any) -> ColumnElement[Any]:
        return case((a.is_(None), b), (b.is_(None), a), (a < b, a), else_=b)

    status_new = tuple_(terminal(new.status), new.status_at, new.status, new.queue_name) > tuple_(
        terminal(old.status), func.coalesce(old.status_at, floor), old.status, old.queue_name
    )
    response_new = func.coalesce(new.response_at, floor) > func.coalesce(old.response_at, floor)
    failure_new = tuple_(func.coalesce(new.failure_at, floor), func.coalesce(new.last_bounce_reason, "")) > tuple_(
        func.coalesce(old.failure_at, floor), func.coalesce(old.last_bounce_reason, "")
    )
    clause: dict[str, Any] = {
        name: case((status_new, new[name]), else_=old[name])
        for name in (
            "message_id",
            "queue_name",
            "recipient",
            "sender",
            "domain",
            "routing_domain",
            "campaign_id",
            "tenant_id",
            "status",
            "status_at",
        )
    }
    clause.update(
        {
            name: case((status_new, func.coalesce(new[name], old[name])), else_=func.coalesce(old[name], new[name]))
            for name in ("headers", "metadata", "subject")
        }
    )
    clause.update(
        size_bytes=case((new.size_bytes > old.size_bytes, new.size_bytes), else_=old.size_bytes),
        num_attempts=case((new.num_attempts > old.num_attempts, new.num_attempts), else_=old.num_attempts),
        last_attempt_at=latest(new.last_attempt_at, old.last_attempt_at),
        response_at=latest(new.response_at, old.response_at),
        failure_at=latest(new.failure_at, old.failure_at),
        created_at=earliest(new.created_at, old.created_at),
        delivered_at=earliest(new.delivered_at, old.delivered_at),
        smtp_response=case((response_new, new.smtp_response), else_=old.smtp_response),
        pool_name=case(
            (response_new, func.coalesce(new.pool_name, old.pool_name)),
            else_=func.coalesce(old.pool_name, new.pool_name),
        ),
        delivery_protocol=case(
            (response_new, func.coalesce(new.delivery_protocol, old.delivery_protocol)),
            else_=func.coalesce(old.delivery_protocol, new.delivery_protocol),
        ),
        last_bounce_reason=case((failure_new, new.last_bounce_reason), else_=old.last_bounce_reason),
        bounce_classification=case((failure_new, new.bounce_classification), else_=old.bounce_classification),
        updated_at=new.updated_at,
    )
    return clause


JSON_COLUMNS = frozenset({"smtp_response", "headers", "metadata"})


@functools.cache
def _postgres_upsert(names: tuple[str, ...]) -> Any:
    """INSERT ... SELECT FROM unnest(one array per column) ON CONFLICT DO UPDATE <merge>.

    One statement with ~30 array parameters whatever the batch size: asyncpg sends the arrays in binary, and
    Postgres plans the statement once, instead of per-row parameters and per-row bind processing.
    """
    columns: list[ColumnElement[Any]] = []
    for name in names:
        column_type = COLUMNS[name].type
        if name in JSON_COLUMNS:
            element_type: Any = Text()
        elif isinstance(column_type, UtcDateTime):
            element_type = DateTime(timezone=True)
        elif name == "id":
            element_type = Uuid()
        else:
            element_type = column_type
        unnested: ColumnElement[Any] = func.unnest(bindparam(name, type_=postgresql.ARRAY(element_type)))
        if name in JSON_COLUMNS:
            unnested = cast(unnested, postgresql.JSONB)
        columns.append(unnested.label(name))
    insert = pg_insert(TABLE).from_select(list(names), select(*columns))
    return insert.on_conflict_do_update(index_elements=[COLUMNS.id], set_=_merge_clause(insert.excluded))


async def apply_observations(session: AsyncSession, observations: Sequence[MessageObservation]) -> int:
    """Upsert the observations into the mirror; returns the number of messages touched."""
    combined = combine(observations)
    if not combined:
        return 0
    now = datetime.now(UTC)
    # Rows in id order: concurrent writers then lock rows in the same order and cannot deadlock.
    rows = sorted((_values(o, now) for o in combined), key=lambda row: row["id"])
    if session.get_bind().dialect.name == "postgresql":
        names = tuple(rows[0])
        arrays = {
            name: [_json_text(row[name]) for row in rows] if name in JSON_COLUMNS else [row[name] for row in rows]
            for name in names
        }
        await session.execute(_postgres_upsert(names), arrays)
        return len(rows)
    insert = sqlite_insert(TABLE)
    statement = insert.on_conflict_do_update(index_elements=[COLUMNS.id], set_=_merge_clause(insert.excluded))
    await session.execute(statement, rows)
    return len(rows)


def _json_text(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
