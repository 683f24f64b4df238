"""Every filter and sort of the message listing, and cursor paging, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from adapters.kumomta.log_source import KUMOMTA
from adapters.model import (
    BounceType,
    MessageQueueItem,
    MessageQueueStatus,
    QueueFilter,
    QueueSortField,
    QueueState,
)
from adapters.zonemta.log_source import ZONEMTA
from controlplane.db.engine import create_engine
from controlplane.db.messages import TABLE, insert_new
from controlplane.errors import InvalidInput, QueryTooBroad
from controlplane.events.service import decode_body, write_group
from controlplane.queues.service import QueueQueryService
from controlplane.services import Services
from tests.controlplane.events.test_hostile_records import record
from tests.support import BASE_TIME, make_message, zonemta_batch

S = MessageQueueStatus


async def store(services: Services, *messages: MessageQueueItem) -> list[MessageQueueItem]:
    async with services.sessions.begin() as session:
        await insert_new(session, list(messages))
    return list(messages)


async def ids(services: Services, **filters: Any) -> set[str]:
    page = await services.queues.list_messages(QueueFilter(limit=1000, **filters))
    return {str(m.id) for m in page.data}


def idset(*messages: MessageQueueItem) -> set[str]:
    return {str(m.id) for m in messages}


async def test_a_stored_message_reads_back_field_for_field(services: Services) -> None:
    import json

    import msgspec

    from tests.support import load_fixture

    example = msgspec.json.decode(json.dumps(load_fixture("model/appendix_a_message.json")), type=MessageQueueItem)
    await store(services, example)
    assert await services.queues.get_message(example.id) == example


async def test_every_scalar_filter_selects_exactly_its_messages(services: Services) -> None:
    other = make_message()
    special = make_message(
        domain="gmail.com",
        sender="promo@acme.test",
        routing_domain="mx.gmail.com",
        campaign_id="spring",
        tenant_id="acme",
        pool_name="pool-a",
        status=S.bounced,
        queue_state=QueueState.suspended,
        bounce_classification=BounceType.hard,
        priority=9,
        num_attempts=4,
        size_bytes=50_000,
        tags=["vip", "promo"],
        headers={"Subject": "Spring SALE inside"},
        scheduled_at=BASE_TIME + timedelta(days=3),
    )
    await store(services, other, special)
    want = idset(special)
    assert await ids(services, status=S.bounced) == want
    assert await ids(services, status=[S.bounced, S.expired]) == want
    assert await ids(services, queue_state=QueueState.suspended) == want
    assert await ids(services, domain="GMAIL.com") == want
    assert await ids(services, domains=["gmail.com", "nowhere.test"]) == want
    assert await ids(services, sender="promo@ACME.test") == want
    assert await ids(services, recipient=special.recipient) == want
    assert await ids(services, routing_domain="mx.gmail.com") == want
    assert await ids(services, campaign_id="spring") == want
    assert await ids(services, tenant_id="acme") == want
    assert await ids(services, pool_name="pool-a") == want
    assert await ids(services, bounce_type=BounceType.hard) == want
    assert await ids(services, priority=9) == want
    assert await ids(services, min_attempts=3) == want
    assert await ids(services, max_attempts=3) == idset(other)
    assert await ids(services, min_size_bytes=40_000) == want
    assert await ids(services, max_size_bytes=40_000) == idset(other)
    assert await ids(services, tags=["vip"]) == want
    assert await ids(services, tags=["vip", "promo"]) == want
    assert await ids(services, tags=["vip", "absent"]) == set()
    assert await ids(services, search_query="sale") == want  # subject, any case
    assert await ids(services, search_query="promo@acme") == want  # sender
    assert await ids(services, search_query=special.recipient.split("@")[0]) == want  # recipient
    assert await ids(services, search_query="100%") == set()  # LIKE wildcards are literal
    assert await ids(services, scheduled_after=BASE_TIME + timedelta(days=1)) == want
    assert await ids(services, scheduled_before=BASE_TIME + timedelta(days=1)) == set()


async def test_time_ranges_are_inclusive_after_and_exclusive_before(services: Services) -> None:
    early, middle, late = (make_message(created_at=BASE_TIME + timedelta(hours=h)) for h in (0, 1, 2))
    await store(services, early, middle, late)
    one_hour = BASE_TIME + timedelta(hours=1)
    assert await ids(services, created_after=one_hour) == idset(middle, late)
    assert await ids(services, created_before=one_hour) == idset(early)
    assert await ids(services, created_after=BASE_TIME, created_before=one_hour + timedelta(hours=1)) == idset(
        early, middle
    )


SORT_KEYS = {
    QueueSortField.created_at: lambda m: m.created_at,
    QueueSortField.priority: lambda m: m.priority,
    QueueSortField.num_attempts: lambda m: m.num_attempts,
    QueueSortField.size_bytes: lambda m: m.size_bytes,
    QueueSortField.recipient: lambda m: m.recipient,
    QueueSortField.domain: lambda m: m.domain,
}


def varied_messages(count: int) -> list[MessageQueueItem]:
    domains = ["a.test", "b.test", "c.test"]
    return [
        make_message(
            domain=domains[i % 3],
            priority=i % 4,
            num_attempts=i % 3,
            size_bytes=1000 * (i % 5),
            created_at=BASE_TIME + timedelta(minutes=i % 7),  # deliberate ties
            scheduled_at=None if i % 3 == 0 else BASE_TIME + timedelta(hours=i % 4),
        )
        for i in range(count)
    ]


async def walk(services: Services, page_size: int, **filters: Any) -> list[MessageQueueItem]:
    seen: list[MessageQueueItem] = []
    cursor = None
    while True:
        page = await services.queues.list_messages(QueueFilter(limit=page_size, **filters), cursor=cursor)
        seen.extend(page.data)
        if not page.has_more:
            assert page.cursor is None
            return seen
        cursor = page.cursor


@pytest.mark.parametrize("sort_by", list(QueueSortField))
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_cursor_pages_visit_every_message_once_in_sort_order(
    services: Services, sort_by: QueueSortField, order: str
) -> None:
    messages = await store(services, *varied_messages(40))
    walked = await walk(services, 7, sort_by=sort_by, sort_order=order)
    assert len(walked) == 40 and idset(*walked) == idset(*messages)
    if sort_by is QueueSortField.scheduled_at:
        values = [m.scheduled_at for m in walked]
        nulls = [v is None for v in values]
        # NULL sorts as the largest value: last ascending, first descending
        assert nulls == sorted(nulls, reverse=order == "desc")
        present = [v for v in values if v is not None]
    else:
        present = [SORT_KEYS[sort_by](m) for m in walked]
    assert present == sorted(present, reverse=order == "desc")


async def test_cursor_paging_is_stable_while_new_messages_arrive(services: Services) -> None:
    original = await store(services, *[make_message(created_at=BASE_TIME + timedelta(seconds=i)) for i in range(30)])
    seen: list[MessageQueueItem] = []
    cursor = None
    arrivals = 0
    while True:
        page, _ = await asyncio.gather(
            services.queues.list_messages(QueueFilter(limit=4), cursor=cursor),
            # newer messages land at the head, older-looking ones inside the unread part
            store(
                services,
                make_message(created_at=BASE_TIME + timedelta(days=1, seconds=arrivals)),
                make_message(created_at=BASE_TIME - timedelta(days=1, seconds=arrivals)),
            ),
        )
        arrivals += 1
        seen.extend(page.data)
        if not page.has_more:
            break
        cursor = page.cursor
    seen_ids = [str(m.id) for m in seen]
    assert len(seen_ids) == len(set(seen_ids)), "a message was served twice"
    assert idset(*original) <= set(seen_ids), "a message present from the start was skipped"
    created = [m.created_at for m in seen]
    assert created == sorted(created, reverse=True)


async def test_filters_and_cursor_combine(services: Services) -> None:
    bounced = await store(services, *[make_message(status=S.bounced) for _ in range(9)])
    await store(services, *[make_message(status=S.delivered) for _ in range(9)])
    walked = await walk(services, 2, status=S.bounced)
    assert idset(*walked) == idset(*bounced)


async def test_offset_paging_works_for_shallow_pages_only(services: Services) -> None:
    await store(services, *[make_message() for _ in range(5)])
    everything = (await services.queues.list_messages(QueueFilter(limit=5))).data
    page = await services.queues.list_messages(QueueFilter(limit=2, offset=2))
    assert page.data == everything[2:4]
    with pytest.raises(InvalidInput) as refused:
        await services.queues.list_messages(QueueFilter(offset=20_000))
    assert refused.value.field == "offset"


async def test_a_cursor_from_another_sort_is_refused(services: Services) -> None:
    await store(services, *[make_message() for _ in range(3)])
    page = await services.queues.list_messages(QueueFilter(limit=1))
    with pytest.raises(InvalidInput) as refused:
        await services.queues.list_messages(QueueFilter(limit=1, sort_by=QueueSortField.priority), cursor=page.cursor)
    assert refused.value.field == "cursor"


async def test_reversed_ranges_are_empty_ranges(services: Services) -> None:
    await store(services, make_message(created_at=BASE_TIME))
    page = await services.queues.list_messages(
        QueueFilter(created_after=BASE_TIME, created_before=BASE_TIME - timedelta(seconds=1))
    )
    assert page.data == [] and page.cursor is None


async def test_queues_summarise_counts_by_status_and_the_most_restrictive_state(services: Services) -> None:
    await store(
        services,
        make_message(domain="gmail.com", tenant_id="acme", status=S.ready),
        make_message(domain="gmail.com", tenant_id="acme", status=S.deferred, queue_state=QueueState.suspended),
        make_message(domain="yahoo.com", status=S.delivered),
    )
    queues = {q.queue_name: q for q in (await services.queues.list_queues()).data}
    gmail = queues["acme@gmail.com"]
    assert (gmail.total, gmail.tenant_id, gmail.domain, gmail.queue_state) == (
        2,
        "acme",
        "gmail.com",
        QueueState.suspended,
    )
    assert gmail.messages_by_status[S.ready] == 1 and gmail.messages_by_status[S.deferred] == 1
    assert queues["yahoo.com"].messages_by_status[S.delivered] == 1
    assert [q.queue_name for q in (await services.queues.list_queues(tenant_id="acme")).data] == ["acme@gmail.com"]


async def test_metrics_count_what_is_stored(services: Services) -> None:
    now = BASE_TIME + timedelta(hours=2)
    await store(
        services,
        make_message(
            domain="gmail.com",
            status=S.delivered,
            created_at=now - timedelta(minutes=30),
            delivered_at=now - timedelta(minutes=20),
            num_attempts=1,
        ),
        make_message(
            domain="gmail.com",
            status=S.bounced,
            bounce_classification=BounceType.hard,
            created_at=now - timedelta(hours=5),
            num_attempts=3,
            campaign_id="spring",
        ),
        make_message(
            domain="yahoo.com",
            status=S.deferred,
            bounce_classification=BounceType.soft,
            created_at=now - timedelta(days=2),
            num_attempts=2,
            size_bytes=700,
            campaign_id="spring",
        ),
        make_message(domain="yahoo.com", status=S.ready, created_at=now - timedelta(days=10), size_bytes=300),
    )
    m = await services.queues.metrics(now=now)
    assert m.total_messages == 4
    assert m.messages_by_status[S.delivered] == 1 and m.messages_by_status[S.expired] == 0
    assert m.queue_depth == 2
    assert m.queue_depth_by_domain == {"yahoo.com": 2}
    assert m.queue_depth_by_campaign == {"spring": 1}
    assert m.total_retries == 2 + 1
    assert m.retry_rate == 50.0
    assert m.bounce_rate == 25.0
    assert m.bounces_by_type[BounceType.hard] == 1 and m.bounces_by_type[BounceType.soft] == 1
    assert m.average_delivery_time == pytest.approx(600.0, abs=1)
    assert m.total_size_bytes == 1000
    assert m.oldest_message_age == pytest.approx(10 * 86400, abs=1)
    assert m.newest_message_age == pytest.approx(2 * 86400, abs=1)
    assert m.average_queue_time == pytest.approx(6 * 86400, abs=1)
    # Domain health is scored from the event rollups by its job (tests/controlplane/domains), not from the mirror.
    assert m.domain_health_scores == {}
    scoped = await services.queues.metrics(domain="gmail.com", now=now)
    assert scoped.total_messages == 2 and scoped.queue_depth == 0


async def test_metrics_time_windows_count_received_and_delivered_events(services: Services) -> None:
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    ages = [timedelta(minutes=10), timedelta(hours=5), timedelta(days=2), timedelta(days=10)]
    records = []
    for n, age in enumerate(ages):
        common = {"id": f"{n:032x}", "recipient": f"u{n}@gmail.com", "queue": "spring:acme@gmail.com", "created": None}
        common |= {"created_time": None}
        at = now - age
        records.append(record("log_reception", **common, timestamp=int(at.timestamp()), event_time=None))
        delivered = at + timedelta(minutes=5)
        records.append(record("log_delivery", **common, timestamp=int(delivered.timestamp()), event_time=None))
    decoded, dead, _ = decode_body(json.dumps(records).encode(), source=KUMOMTA, api_key=None, tenant=None)
    async with services.sessions.begin() as session:
        await write_group(session, decoded, dead)
    await services.projections.catch_up()
    for scope in ({}, {"tenant_id": "acme"}, {"domain": "GMAIL.com"}, {"tenant_id": "acme", "domain": "gmail.com"}):
        m = await services.queues.metrics(now=now, **scope)
        assert (m.messages_last_hour, m.messages_last_24h, m.messages_last_7d) == (1, 2, 3), scope
        assert m.delivery_rate == 1.0, scope
    other = await services.queues.metrics(now=now, tenant_id="globex")
    assert (other.messages_last_7d, other.delivery_rate) == (0, 0.0)


async def test_metrics_time_windows_count_zonemta_s_queued_and_accepted_too(services: Services) -> None:
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    entries = json.loads(zonemta_batch())
    queued = next(e for e in entries if e["action"] == "QUEUED")  # two recipients
    accepted = next(e for e in entries if e["action"] == "ACCEPTED")
    posted = []
    for age in (timedelta(minutes=10), timedelta(days=2)):
        at = int((now - age).timestamp() * 1000)
        posted.append(queued | {"_mtactl": {"node": "mta1", "at": at}})
        posted.append(accepted | {"_mtactl": {"node": "mta1", "at": at + 60_000}})
    decoded, dead, rejected = decode_body(json.dumps(posted).encode(), source=ZONEMTA, api_key=None, tenant=None)
    assert rejected == []
    async with services.sessions.begin() as session:
        await write_group(session, decoded, dead)
    await services.projections.catch_up()
    m = await services.queues.metrics(now=now)
    assert (m.messages_last_hour, m.messages_last_24h, m.messages_last_7d, m.delivery_rate) == (2, 2, 4, 1.0)
    scoped = await services.queues.metrics(now=now, domain="example.com")
    assert (scoped.messages_last_hour, scoped.messages_last_7d, scoped.delivery_rate) == (1, 2, 1.0)


async def test_without_sort_by_a_range_filter_sorts_by_its_own_column(services: Services) -> None:
    big = [
        make_message(size_bytes=size, created_at=BASE_TIME + timedelta(minutes=m))
        for size, m in [(5000, 3), (9000, 1), (7000, 2)]
    ]
    await store(services, *big, make_message(size_bytes=10))
    by_size = (await services.queues.list_messages(QueueFilter(min_size_bytes=1000))).data
    assert [m.size_bytes for m in by_size] == [9000, 7000, 5000]
    by_creation = (
        await services.queues.list_messages(QueueFilter(min_size_bytes=1000, sort_by=QueueSortField.created_at))
    ).data
    assert [m.size_bytes for m in by_creation] == [5000, 7000, 9000]
    dated = QueueFilter(min_size_bytes=1, created_after=BASE_TIME)
    assert dated.effective_sort_by() is QueueSortField.created_at
    assert QueueFilter(scheduled_before=BASE_TIME).effective_sort_by() is QueueSortField.scheduled_at
    assert QueueFilter(max_attempts=2).effective_sort_by() is QueueSortField.num_attempts


async def test_a_listing_that_runs_past_its_time_limit_is_stopped_and_says_what_to_narrow(services: Services) -> None:
    if services.settings.is_sqlite:
        pytest.skip("SQLite has no statement timeout; the limit guards the shared Postgres")
    await store(services, make_message())
    engine = create_engine(services.settings)
    try:
        async with engine.connect() as blocker:
            # A query held up for longer than the limit, whatever the reason: here a lock it has to wait for.
            await blocker.execute(text("LOCK TABLE message_queue IN ACCESS EXCLUSIVE MODE"))
            limited = QueueQueryService(services.sessions, listing_timeout_ms=200)
            with pytest.raises(QueryTooBroad) as stopped:
                await limited.list_messages(QueueFilter(sort_by=QueueSortField.size_bytes))
            assert stopped.value.field == "sort_by" and "200 ms" in stopped.value.message
            assert "sort by created_at" in stopped.value.message
            with pytest.raises(QueryTooBroad) as broad:
                await limited.list_messages(QueueFilter())
            assert broad.value.field is None and "add a filter" in broad.value.message
            await blocker.rollback()
    finally:
        await engine.dispose()
    assert (
        len((await QueueQueryService(services.sessions, listing_timeout_ms=200).list_messages(QueueFilter())).data) == 1
    )


async def test_a_search_finds_a_message_by_what_it_says_now(services: Services) -> None:
    message = make_message(sender="promo@acme.test", headers={"Subject": "Spring SALE"})
    await store(services, message, make_message())
    assert await ids(services, search_query="sale") == idset(message)
    async with services.sessions.begin() as session:  # a later event's subject
        await session.execute(TABLE.update().where(TABLE.c.id == message.id).values(subject="100% off"))
    assert await ids(services, search_query="sale") == set()
    assert await ids(services, search_query="100%") == idset(message)
    async with services.sessions.begin() as session:
        await session.execute(TABLE.delete().where(TABLE.c.id == message.id))
    assert await ids(services, search_query="promo@acme") == set()
