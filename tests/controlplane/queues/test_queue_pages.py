"""GET /api/v1/queues a page at a time (``QueueQueryService.list_queues``), on SQLite and on Postgres: every queue
the mirror counts or a node reports comes exactly once, in code point order, and a tenant never sees another's."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import delete

from adapters.model import MessageQueueItem, MessageQueueStatus, QueueName, QueueSortField
from controlplane.db.messages import insert_new
from controlplane.db.tables import MessageRow, NodeHoldRow, NodeQueuesRow, NodeRow
from controlplane.errors import InvalidInput
from controlplane.queues.schema import QueueList, QueueSummary
from controlplane.queues.service import Cursor, QueueCursor
from controlplane.services import Services
from controlplane.settings import Settings
from tests.conftest import POSTGRES_DSN
from tests.support import BASE_TIME, make_message

S = MessageQueueStatus


async def store(services: Services, *messages: MessageQueueItem) -> None:
    async with services.sessions.begin() as session:
        await insert_new(session, list(messages))


def queued(queue_name: str, *, tenant_id: str | None = None, status: S = S.ready) -> MessageQueueItem:
    """A message in the named queue, counted as ``tenant_id``'s (the mirror's column, whatever the name says)."""
    return make_message(
        queue_name=queue_name, domain=QueueName.parse(queue_name).domain, tenant_id=tenant_id, status=status
    )


async def report(
    services: Services, node: str, scheduled: dict[str, int], ready: dict[str, int] | None = None
) -> uuid.UUID:
    """A node whose last sync read these queue counts."""
    node_id = uuid.uuid4()
    async with services.sessions.begin() as session:
        session.add(
            NodeRow(
                id=node_id,
                name=node,
                kind="kumomta",
                base_url=f"http://{node}.test",
                auth_scheme="none",
                credentials=None,
                labels={},
                created_at=BASE_TIME,
            )
        )
        await session.flush()
        session.add(NodeQueuesRow(node_id=node_id, scheduled=scheduled, ready=ready or {}))
    return node_id


async def walk(services: Services, limit: int, **query: Any) -> list[QueueList]:
    """Every page, following the cursors from the first."""
    pages = [await services.queues.list_queues(limit=limit, **query)]
    while pages[-1].has_more:
        assert pages[-1].cursor is not None and len(pages[-1].data) == limit
        pages.append(await services.queues.list_queues(limit=limit, cursor=pages[-1].cursor, **query))
        assert len(pages) < 1000
    assert pages[-1].cursor is None
    return pages


def names(pages: list[QueueList]) -> list[str]:
    return [q.queue_name for page in pages for q in page.data]


async def test_pages_list_every_queue_once_in_code_point_order_with_ready_queues_on_the_first(
    services: Services,
) -> None:
    mirrored = ["acme@gmail.com", "Zeta@gmail.com", "spring:acme@yahoo.com", "émile@free.fr", "b.example"]
    await store(services, *[queued(name) for name in mirrored], queued("acme@gmail.com", status=S.deferred))
    both, nodes_only = "acme@gmail.com", ["acme@aol.com", "zz@gmail.com"]
    kumo = await report(services, "kumo-1", {both: 4, nodes_only[0]: 2}, ready={"gmail.com@smtp_client": 3})
    await report(services, "kumo-2", {both: 1, nodes_only[1]: 9})
    everything = sorted(mirrored + nodes_only)  # Python's order: code points ('Z' < 'a' < 'é')

    whole = await services.queues.list_queues()
    assert names([whole]) == everything and not whole.has_more and whole.cursor is None
    for limit in (1, 2, 3, 6, 7, 8):
        pages = await walk(services, limit)
        assert names(pages) == everything, limit
        assert [len(p.ready_queues) for p in pages] == [1] + [0] * (len(pages) - 1)  # the first page only
        assert [q for p in pages for q in p.data] == whole.data
    gmail = next(q for q in whole.data if q.queue_name == both)
    assert (gmail.total, gmail.messages_by_status[S.deferred], gmail.scheduled) == (2, 1, 5)
    assert [(n.node, n.scheduled) for n in gmail.nodes] == [("kumo-1", 4), ("kumo-2", 1)]
    assert whole.ready_queues[0].node_id == kumo and whole.ready_queues[0].ready == 3


async def test_a_page_shows_the_holds_matching_its_queues(services: Services) -> None:
    await store(services, queued("acme@gmail.com"), queued("acme@yahoo.com"))
    node_id = await report(services, "kumo-1", {"acme@gmail.com": 1})
    async with services.sessions.begin() as session:
        session.add(
            NodeHoldRow(
                node_id=node_id,
                kind="suspension",
                hold_id="s-1",
                source="kumod",
                reason="r",
                domain="yahoo.com",
                total_bounced=0,
            )
        )
    first, second = await walk(services, 1)
    assert (first.data[0].queue_name, first.data[0].suspended_by, first.data[0].queue_state.value) == (
        "acme@gmail.com",
        [],
        "active",
    )
    assert (second.data[0].queue_name, second.data[0].suspended_by, second.data[0].queue_state.value) == (
        "acme@yahoo.com",
        ["s-1"],
        "suspended",
    )


async def test_a_queue_whose_counters_are_all_zero_is_gone_unless_a_node_reports_it(services: Services) -> None:
    gone, moved, reported = queued("gone@gmail.com"), queued("moved@gmail.com"), queued("reported@gmail.com")
    await store(services, gone, moved, reported)
    async with services.sessions.begin() as session:
        # Deleting the messages leaves their counters' rows behind at zero.
        await session.execute(delete(MessageRow).where(MessageRow.id.in_([gone.id, reported.id])))
    await store(services, queued("moved@gmail.com", status=S.delivered))
    await report(services, "kumo-1", {"reported@gmail.com": 3})
    for limit in (1, 2, 100):
        pages = await walk(services, limit)
        assert names(pages) == ["moved@gmail.com", "reported@gmail.com"], limit
        moved_summary = pages[0].data[0]
        assert moved_summary.total == 2 and moved_summary.messages_by_status[S.delivered] == 1
        assert [q.total for p in pages for q in p.data] == [2, 0]


async def test_a_queue_with_more_counter_rows_than_a_read_is_counted_whole(services: Services) -> None:
    # A page reads the counters 4 * (limit + 1) rows at a time; this queue has a row per status and tenant (27).
    many = [queued("many@gmail.com", tenant_id=t, status=status) for status in S for t in ("acme", "beta", None)]
    await store(services, queued("a@gmail.com"), *many, queued("z@gmail.com"))
    for limit in (1, 2):
        pages = await walk(services, limit)
        assert [(q.queue_name, q.total) for p in pages for q in p.data] == [
            ("a@gmail.com", 1),
            ("many@gmail.com", 27),
            ("z@gmail.com", 1),
        ]
        assert all(n == 3 for n in next(q for p in pages for q in p.data if q.total == 27).messages_by_status.values())


async def test_an_empty_fleet_is_one_empty_last_page(services: Services) -> None:
    page = await services.queues.list_queues(limit=1)
    assert (page.data, page.ready_queues, page.cursor, page.has_more) == ([], [], None, False)


@pytest.mark.parametrize("limit", [0, 1001])
async def test_a_limit_out_of_range_is_refused_naming_limit(services: Services, limit: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        await services.queues.list_queues(limit=limit)
    assert refused.value.field == "limit"


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "bm90IGpzb24",  # base64 of "not json"
        # a message listing's
        Cursor(sort_by=QueueSortField.created_at, sort_order="desc", value=None, id=uuid.uuid4()).encode(),
    ],
)
async def test_a_cursor_this_listing_did_not_issue_is_refused_naming_cursor(services: Services, cursor: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await services.queues.list_queues(cursor=cursor)
    assert refused.value.field == "cursor"


async def test_a_cursor_is_a_position_so_the_next_page_survives_its_last_queue_going_away(services: Services) -> None:
    first_queue = queued("a@gmail.com")
    await store(services, first_queue, queued("b@gmail.com"))
    first = await services.queues.list_queues(limit=1)
    assert first.cursor is not None
    async with services.sessions.begin() as session:
        await session.execute(delete(MessageRow).where(MessageRow.id == first_queue.id))
    after = await services.queues.list_queues(limit=1, cursor=first.cursor)
    assert names([after]) == ["b@gmail.com"] and QueueCursor(after="a@gmail.com").encode() == first.cursor


# Names that parse to tenant "acme" (plain, with a campaign, with a routing domain) and names that only look
# close: another tenant, "acme" as the campaign, "acme" inside a longer tenant or in the domain, no tenant.
TENANT_NAMES = [
    "acme@gmail.com",
    "spring:acme@gmail.com",
    "acme@yahoo.com!mx.yahoo.com",
    "beta@gmail.com",
    "acme:beta@gmail.com",
    "beta:acme@yahoo.com",
    "xacme@gmail.com",
    "acmex@gmail.com",
    "beta@acme.com",
    "gmail.com",
    "acme",
    ":acme@gmail.com",
    "a:b:acme@gmail.com",
]


@pytest.mark.parametrize("seed", range(12))
async def test_no_page_ever_shows_a_tenant_another_tenants_queue(services: Services, seed: int) -> None:
    """Random mirrors and nodes: the mirror counts each message as some tenant's whatever its queue's name says,
    and nodes report names of every tenant. Walked as "acme" at any page size, the pages show exactly acme's
    queues, each once: those the mirror counts as acme's (with acme's messages only, and the nodes' counts only
    when the name is acme's too) and those the nodes report under a name of acme's."""
    rng = random.Random(seed)
    pool = TENANT_NAMES + [
        f"{rng.choice(['', 'c1:', 'c2:'])}{rng.choice(['acme', 'beta'])}@d{i}.test" for i in range(8)
    ]
    messages = [
        queued(rng.choice(pool), tenant_id=rng.choice(["acme", "beta", None]), status=rng.choice([S.ready, S.bounced]))
        for _ in range(rng.randrange(5, 30))
    ]
    await store(services, *messages)
    for node in range(rng.randrange(0, 3)):
        reported = {name: rng.randrange(1, 9) for name in rng.sample(pool, rng.randrange(0, 10))}
        await report(services, f"kumo-{node}", reported, ready={"gmail.com@smtp_client": 1})

    acme_messages: dict[str, int] = {}
    for m in messages:
        if m.tenant_id == "acme":
            acme_messages[m.queue_name] = acme_messages.get(m.queue_name, 0) + 1
    whole = await services.queues.list_queues(limit=1000)
    on_nodes = {q.queue_name for q in whole.data if q.nodes}
    acme_named = {name for name in on_nodes if QueueName.parse(name).tenant == "acme"}
    expected = sorted(acme_messages.keys() | acme_named)

    def shown_as_acme_sees_it(q: QueueSummary) -> None:
        assert q.queue_name in expected, q.queue_name
        assert q.total == acme_messages.get(q.queue_name, 0), q  # nobody else's messages are counted
        if QueueName.parse(q.queue_name).tenant != "acme":
            assert q.nodes == [] and q.scheduled == 0, q  # nor another tenant's queue on the nodes

    for limit in (1, 2, 3, 5, 1000):
        pages = await walk(services, limit, tenant_id="acme")
        assert names(pages) == expected, (seed, limit)
        for page in pages:
            assert page.ready_queues == []
            for q in page.data:
                shown_as_acme_sees_it(q)


@pytest.fixture
async def linguistic_postgres(tmp_path: Path) -> AsyncIterator[Services]:
    """Services on a Postgres database whose default collation is linguistic (ICU en-US: 'acme' < 'Zeta')."""
    name = f"mtactl_test_icu_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
        base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        services = await Services.start(Settings(database_url=f"{base}/{name}", spool_dir=str(tmp_path)))
        try:
            yield services
        finally:
            await services.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_pages_keep_code_point_order_on_a_database_that_sorts_text_otherwise(
    linguistic_postgres: Services,
) -> None:
    # The counters' names are merged with the nodes' in Python: the database must order them as Python does.
    services = linguistic_postgres
    mirrored = ["acme@gmail.com", "Zeta@gmail.com", "b-c@gmail.com", "bc@gmail.com", "Émile@free.fr"]
    await store(services, *[queued(name) for name in mirrored])
    await report(services, "kumo-1", {"Acme@gmail.com": 1, "b_c@gmail.com": 1, "zeta@gmail.com": 2})
    everything = sorted([*mirrored, "Acme@gmail.com", "b_c@gmail.com", "zeta@gmail.com"])
    for limit in (1, 2, 3, 100):
        assert names(await walk(services, limit)) == everything, limit
