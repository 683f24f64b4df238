"""``message_search`` (migration 0016) holds exactly the searched text of every mirrored message, whoever writes
the mirror and however, so a search finds a message by the subject, sender or recipient it has now."""

from __future__ import annotations

import random
import uuid
from typing import Any

from sqlalchemy import delete, select, text

from adapters.model import QueueFilter
from controlplane.db.messages import SEARCH, TABLE, insert_new
from controlplane.db.tables import MessageRow
from controlplane.services import Services
from tests.migrations.test_metrics_counts import migrate
from tests.support import make_message

SUBJECTS = [None, "Invoice 42", "Ihre Rechnung ÄÖÜ", "100% off_sale", "", "re: Spring SALE", "日本語の件名"]


async def kept(services: Services) -> dict[uuid.UUID, str]:
    async with services.sessions() as session:
        return {row.id: row.text for row in await session.execute(select(SEARCH.c.id, SEARCH.c.text))}


async def searched_text_of_the_mirror(services: Services) -> dict[uuid.UUID, str]:
    """What the search must match for every mirrored message, computed by the database's own lower()."""
    statement = text("SELECT id, lower(recipient || ' ' || sender || ' ' || coalesce(subject, '')) FROM message_queue")
    async with services.sessions() as session:
        rows = (await session.execute(statement.columns(TABLE.c.id, TABLE.c.subject))).all()
    return {row[0]: row[1] for row in rows}


async def found(services: Services, query: str) -> set[uuid.UUID]:
    page = await services.queues.list_messages(QueueFilter(limit=1000, search_query=query))
    return {m.id for m in page.data}


async def test_the_search_text_follows_every_insert_change_and_delete_of_the_mirror(services: Services) -> None:
    rng = random.Random(16)
    c = TABLE.c
    for round_ in range(4):
        async with services.sessions.begin() as session:
            await insert_new(
                session,
                [
                    make_message(headers={"Subject": s} if (s := rng.choice(SUBJECTS)) is not None else None)
                    for _ in range(40)
                ],
            )
        ids = list(await searched_text_of_the_mirror(services))
        chosen = rng.sample(ids, 15)
        async with services.sessions.begin() as session:
            # A later event's subject, a changed sender, and changes that leave the searched text alone.
            await session.execute(TABLE.update().where(c.id.in_(chosen[:5])).values(subject=f"Later {round_}"))
            await session.execute(TABLE.update().where(c.id.in_(chosen[5:8])).values(sender=f"new{round_}@x.test"))
            await session.execute(TABLE.update().where(c.id.in_(chosen[8:12])).values(status="delivered"))
            await session.execute(delete(MessageRow).where(MessageRow.id.in_(chosen[12:])))
        assert await kept(services) == await searched_text_of_the_mirror(services)


async def test_a_search_finds_a_message_by_what_it_says_now(services: Services) -> None:
    message = make_message(sender="promo@acme.test", headers={"Subject": "Spring SALE"})
    other = make_message()
    async with services.sessions.begin() as session:
        await insert_new(session, [message, other])
    assert await found(services, "sale") == {message.id}
    assert await found(services, "100%") == set()
    async with services.sessions.begin() as session:
        await session.execute(TABLE.update().where(TABLE.c.id == message.id).values(subject="100% off"))
    assert await found(services, "sale") == set()
    assert await found(services, "100%") == {message.id}
    assert await found(services, "promo@acme") == {message.id}
    async with services.sessions.begin() as session:
        await session.execute(delete(MessageRow).where(MessageRow.id == message.id))
    assert await found(services, "promo@acme") == set()


async def test_upgrading_fills_the_search_text_and_downgrading_restores_the_old_index(services: Services) -> None:
    try:
        await migrate(services, "0015", down=True)
        async with services.sessions.begin() as session:  # mirrored before the search table exists
            await insert_new(session, [make_message(headers={"Subject": s}) for s in ("Alpha", "Beta", "Gamma")])
        if services.engine.dialect.name == "postgresql":
            assert "ix_message_queue_search" in await indexes(services)
    finally:
        await migrate(services, "head")
    assert await kept(services) == await searched_text_of_the_mirror(services)
    assert len(await kept(services)) == 3
    assert len(await found(services, "beta")) == 1
    if services.engine.dialect.name == "postgresql":
        assert "ix_message_queue_search" not in await indexes(services)
        assert "ix_message_search_text" in await indexes(services)


async def indexes(services: Services) -> set[Any]:
    async with services.sessions() as session:
        return set((await session.execute(text("SELECT indexname FROM pg_indexes"))).scalars())
