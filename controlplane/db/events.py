"""``events`` and ``dead_letters``: bulk writes that skip duplicates, and keyset-paged reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Table, bindparam, func, select, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.db.tables import DeadLetterRow, EventRow
from controlplane.db.types import UtcDateTime

EVENTS: Table = EventRow.__table__  # type: ignore[assignment]
DEAD_LETTERS: Table = DeadLetterRow.__table__  # type: ignore[assignment]


def _postgres_insert() -> Any:
    """INSERT ... SELECT FROM unnest(one array per column): one statement, binary arrays, planned once."""
    names = [c.name for c in EVENTS.columns]
    columns = []
    for column in EVENTS.columns:
        element_type = DateTime(timezone=True) if isinstance(column.type, UtcDateTime) else column.type
        columns.append(func.unnest(bindparam(column.name, type_=postgresql.ARRAY(element_type))).label(column.name))
    insert = pg_insert(EVENTS).from_select(names, select(*columns))
    return insert.on_conflict_do_nothing().returning(EVENTS.c.dedupe_key)


_POSTGRES_INSERT = _postgres_insert()


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[bytes]:
    """Insert event rows, skipping any already stored; returns the dedupe keys actually inserted."""
    if not rows:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        arrays = {column.name: [row[column.name] for row in rows] for column in EVENTS.columns}
        result = await session.execute(_POSTGRES_INSERT, arrays)
    else:
        statement = sqlite_insert(EVENTS).on_conflict_do_nothing().returning(EVENTS.c.dedupe_key)
        result = await session.execute(statement, list(rows))
    return {bytes(key) for key in result.scalars()}


async def insert_dead_letters(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(DEAD_LETTERS.insert(), list(rows))


async def select_events(
    session: AsyncSession,
    *,
    where: list[ColumnElement[bool]],
    after: tuple[datetime, bytes] | None,
    descending: bool,
    limit: int,
) -> list[Any]:
    c = EVENTS.c
    statement = select(EVENTS).where(*where)
    if after is not None:
        keyset = tuple_(c.event_at, c.dedupe_key)
        statement = statement.where(keyset < tuple_(*after) if descending else keyset > tuple_(*after))
    order = [c.event_at.desc(), c.dedupe_key.desc()] if descending else [c.event_at.asc(), c.dedupe_key.asc()]
    return list((await session.execute(statement.order_by(*order).limit(limit))).all())


async def select_message_events(session: AsyncSession, message_uuid: uuid.UUID, limit: int) -> list[Any]:
    c = EVENTS.c
    statement = select(EVENTS).where(c.message_uuid == message_uuid).order_by(c.event_at, c.dedupe_key).limit(limit)
    return list((await session.execute(statement)).all())


async def select_dead_letters(session: AsyncSession, *, before_id: int | None, limit: int) -> list[Any]:
    c = DEAD_LETTERS.c
    statement = select(DEAD_LETTERS).order_by(c.id.desc()).limit(limit)
    if before_id is not None:
        statement = statement.where(c.id < before_id)
    return list((await session.execute(statement)).all())
