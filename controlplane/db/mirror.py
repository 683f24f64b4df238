"""Applying ``MessageObservation``s to ``message_queue``: one upsert whose SET clause is the merge rule of
``adapters.model.observation`` written in SQL, so stored row ⊕ new observation = merge(stored, new)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    Table,
    case,
    func,
    literal,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.model import TERMINAL_STATUSES, QueueState, header
from adapters.model.observation import EPOCH, MessageObservation, merge
from controlplane.db.engine import copy_to_stage, empty_stage
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


# The mirror columns an observation sets, in the order of the value tuples built by ``_values``.
MIRROR_COLUMNS: tuple[str, ...] = (
    "id",
    "message_id",
    "queue_name",
    "recipient",
    "sender",
    "domain",
    "routing_domain",
    "campaign_id",
    "tenant_id",
    "pool_name",
    "status",
    "status_at",
    "queue_state",
    "priority",
    "size_bytes",
    "num_attempts",
    "max_attempts",
    "last_attempt_at",
    "next_attempt_at",
    "created_at",
    "delivered_at",
    "response_at",
    "smtp_response",
    "delivery_protocol",
    "failure_at",
    "last_bounce_reason",
    "bounce_classification",
    "headers",
    "metadata",
    "subject",
    "updated_at",
)


def _values(observation: MessageObservation, now: datetime, json: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The row an observation would make, in ``MIRROR_COLUMNS`` order; ``json`` prepares the JSON columns' values
    for the driver."""
    return (
        observation.id,
        observation.message_id,
        observation.queue_name,
        observation.recipient,
        observation.sender,
        observation.domain,
        observation.routing_domain,
        observation.campaign_id,
        observation.tenant_id,
        observation.pool_name,
        observation.status.value,
        observation.status_at,
        QueueState.active.value,  # queue_state
        DEFAULT_PRIORITY,
        observation.size_bytes,
        observation.num_attempts,
        DEFAULT_MAX_ATTEMPTS,
        observation.last_attempt_at,
        observation.next_attempt_at,
        observation.created_at,
        observation.delivered_at,
        observation.response_at,
        json(msgspec.to_builtins(observation.smtp_response) if observation.smtp_response else None),
        observation.delivery_protocol,
        observation.failure_at,
        observation.last_bounce_reason,
        observation.bounce_classification.value if observation.bounce_classification else None,
        json(observation.headers),
        json(observation.metadata),
        header(observation.headers, "Subject"),  # subject
        now,  # updated_at
    )


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

    status_new = tuple_(
        terminal(new.status), new.status_at, new.status, new.queue_name, func.coalesce(new.next_attempt_at, floor)
    ) > tuple_(
        terminal(old.status),
        func.coalesce(old.status_at, floor),
        old.status,
        old.queue_name,
        func.coalesce(old.next_attempt_at, floor),
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
            "next_attempt_at",
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


# Postgres: the observations are COPYed into a session-local staging table shaped like message_queue, then merged
# in by one INSERT ... SELECT ... ON CONFLICT DO UPDATE. COPY's encoding costs the client a fraction of what one
# array parameter per column did, and the server plans one plain statement.
STAGE_NAME = "mirror_stage"
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_NAME} (LIKE message_queue INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
STAGE = Table(STAGE_NAME, MetaData(), *(Column(column.name, column.type) for column in TABLE.columns))


def _postgres_merge_from_stage(*, same_tenant_only: bool = False) -> Any:
    # In id order, so that concurrent writers lock rows in the same order and cannot deadlock.
    staged = select(*(STAGE.c[name] for name in MIRROR_COLUMNS)).order_by(STAGE.c.id)
    insert = pg_insert(TABLE).from_select(list(MIRROR_COLUMNS), staged)
    if not same_tenant_only:
        return insert.on_conflict_do_update(index_elements=[COLUMNS.id], set_=_merge_clause(insert.excluded))
    guarded = insert.on_conflict_do_update(
        index_elements=[COLUMNS.id], set_=_merge_clause(insert.excluded), where=_same_tenant(insert.excluded)
    )
    return guarded.returning(COLUMNS.id)


def _same_tenant(excluded: Any) -> ColumnElement[bool]:
    same: ColumnElement[bool] = COLUMNS.tenant_id == excluded.tenant_id
    return same


_POSTGRES_MERGE = _postgres_merge_from_stage()
_POSTGRES_GUARDED_MERGE = _postgres_merge_from_stage(same_tenant_only=True)


async def apply_observations(
    session: AsyncSession, observations: Sequence[MessageObservation], *, same_tenant_only: bool = False
) -> set[Any]:
    """Upsert the observations into the mirror; returns the ids of the messages left as they were.

    ``same_tenant_only`` (observations from a tenant-bound key) updates a stored message only if it has the
    observation's tenant: the messages of another tenant are the ids returned (always none without it)."""
    combined = combine(observations)
    if not combined:
        return set()
    now = datetime.now(UTC)
    if session.get_bind().dialect.name == "postgresql":
        rows = [_values(o, now, _json_text) for o in combined]
        await copy_to_stage(session, _CREATE_STAGE, STAGE_NAME, MIRROR_COLUMNS, rows)
        touched: set[Any] = set()
        if same_tenant_only:
            touched = {row.id for row in await session.execute(_POSTGRES_GUARDED_MERGE)}
        else:
            await session.execute(_POSTGRES_MERGE)
        # This transaction may merge again: a tenant-bound key's observations after the others, a rebuild's next
        # batch.
        await empty_stage(session, STAGE_NAME)
        if not same_tenant_only:
            return set()
    else:
        insert = sqlite_insert(TABLE)
        values = [dict(zip(MIRROR_COLUMNS, _values(o, now, _same), strict=True)) for o in combined]
        if not same_tenant_only:
            statement = insert.on_conflict_do_update(index_elements=[COLUMNS.id], set_=_merge_clause(insert.excluded))
            await session.execute(statement, values)
            return set()
        guarded = insert.on_conflict_do_update(
            index_elements=[COLUMNS.id], set_=_merge_clause(insert.excluded), where=_same_tenant(insert.excluded)
        ).returning(COLUMNS.id)
        touched = set()
        for value in values:  # one by one: RETURNING over many rows is not offered with ON CONFLICT here
            touched.update(row.id for row in await session.execute(guarded, value))
    return {o.id for o in combined} - touched


def _same(value: Any) -> Any:
    return value


def _json_text(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()
