"""Writing events on Postgres: COPY, and its fallback when some of a group are stored already."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from controlplane.db.events import EVENT_COLUMNS, insert_events
from controlplane.db.tables import EventRow
from controlplane.services import Services

START = datetime.now(UTC).replace(microsecond=0)


def event_rows(count: int) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(count):
        values = {
            "event_at": START + timedelta(milliseconds=n),
            "dedupe_key": hashlib.blake2b(str(n).encode(), digest_size=16).digest(),
            "received_at": START,
            "source": "kumomta",
            "type": "Delivery",
            "message_uuid": None,
            "mta_message_id": f"{n:032x}",
            "recipient": f"user{n}@example.com",
            "sender": "bounces@example.com",
            "queue_name": "example.com",
            "domain": "example.com",
            "tenant_id": None,
            "campaign_id": None,
            "response_code": 250,
            "payload": "{}",
            "posted_by_tenant": None,
        }
        rows.append(tuple(values[name] for name in EVENT_COLUMNS))
    return rows


async def test_two_writers_with_the_same_new_events_in_opposite_orders_both_finish(services: Services) -> None:
    if services.settings.is_sqlite:
        pytest.skip("SQLite has one writer at a time")
    rows = event_rows(4000)

    async def write(group: list[tuple[Any, ...]]) -> set[bytes]:
        async with services.sessions.begin() as session:
            return await insert_events(session, group)

    # Each would wait for the other's uncommitted keys; in opposite orders that is a deadlock unless writes are
    # ordered, and Postgres would then fail one of them.
    first, second = await asyncio.gather(write(rows), write(rows[::-1]))
    assert len(first) + len(second) == 4000
    assert first.isdisjoint(second)
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(EventRow)) == 4000


async def test_a_group_partly_stored_inserts_only_the_new_events(services: Services) -> None:
    rows = event_rows(10)
    async with services.sessions.begin() as session:
        assert len(await insert_events(session, rows[:4], tx=1)) == 4
    async with services.sessions.begin() as session:
        inserted = await insert_events(session, rows, tx=2)
    assert inserted == {row[EVENT_COLUMNS.index("dedupe_key")] for row in rows[4:]}
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(EventRow)) == 10
