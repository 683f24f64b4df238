"""The counters the metrics read for the fleet and for one tenant, domain or campaign (``metrics_counts``,
``metrics_depths``) equal a recount of the mirror whoever writes it, and the metrics answer as a recount does."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from adapters.model import TERMINAL_STATUSES, BounceType, MessageQueueItem, MessageQueueStatus
from controlplane.db.messages import IN_QUEUE, TABLE, insert_new
from controlplane.db.partitions import drop_empty_metrics_counts
from controlplane.db.tables import MessageRow, MetricsCountRow, MetricsDepthRow
from controlplane.queues.service import TOP_BREAKDOWN
from controlplane.services import Services
from tests.controlplane.projections.test_projections import append, traffic
from tests.support import BASE_TIME, make_message

S = MessageQueueStatus
NOW = BASE_TIME + timedelta(days=3)
TENANTS = ["acme", "globex", "initech", None]
DOMAINS = ["gmail.com", "yahoo.com", "example.org", "d1.example"]
CAMPAIGNS = ["spring", "summer", "fall", None]
BOUNCES = {S.bounced: [BounceType.hard, BounceType.block], S.deferred: [BounceType.soft, None], S.expired: [None]}
SCOPES: list[dict[str, str]] = [
    {},
    {"tenant_id": "acme"},
    {"tenant_id": "initech"},
    {"tenant_id": ""},  # messages without a tenant, as '' selects them
    {"tenant_id": "nobody"},
    {"domain": "gmail.com"},
    {"domain": "D1.example"},
    {"campaign_id": "spring"},
    {"campaign_id": "fall"},
    {"campaign_id": ""},
    {"tenant_id": "acme", "domain": "gmail.com"},
    {"tenant_id": "globex", "campaign_id": "summer"},
]


def varied_messages(count: int, seed: int) -> list[MessageQueueItem]:
    rng = random.Random(seed)
    messages = []
    for _ in range(count):
        status = rng.choice(list(S))
        # Whole seconds: the counters keep Unix seconds of creation and milliseconds of delivery, as recounted here.
        created = BASE_TIME + timedelta(seconds=rng.randrange(86400))
        messages.append(
            make_message(
                tenant_id=rng.choice(TENANTS),
                domain=rng.choice(DOMAINS),
                campaign_id=rng.choice(CAMPAIGNS),
                status=status,
                bounce_classification=rng.choice(BOUNCES.get(status, [None])),
                num_attempts=rng.randrange(4),
                size_bytes=rng.randrange(100, 90_000),
                created_at=created,
                delivered_at=created + timedelta(seconds=rng.randrange(1, 900)) if status is S.delivered else None,
            )
        )
    return messages


async def mirrored(services: Services) -> list[dict[str, Any]]:
    c = TABLE.c
    columns = (c.tenant_id, c.domain, c.campaign_id, c.status, c.bounce_classification, c.size_bytes)
    async with services.sessions() as session:
        rows = await session.execute(select(*columns, c.num_attempts, c.created_at, c.delivered_at))
    return [dict(row._mapping) for row in rows]


def contribution(m: dict[str, Any]) -> tuple[int, ...]:
    created = m["created_at"].replace(tzinfo=None)
    delivered = m["delivered_at"].replace(tzinfo=None) if m["delivered_at"] else None
    delivery_ms = round((delivered - created).total_seconds() * 1000) if m["status"] == "delivered" and delivered else 0
    epoch = math.floor((created - datetime(1970, 1, 1)).total_seconds())
    attempts = m["num_attempts"]
    return (1, m["size_bytes"], max(attempts - 1, 0), int(attempts > 1), epoch, delivery_ms)


def recounted_counts(messages: list[dict[str, Any]]) -> dict[tuple[str, ...], tuple[int, ...]]:
    sums: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * 6)
    for m in messages:
        bounce = m["bounce_classification"] or ""
        for dimension, value in (("tenant", m["tenant_id"]), ("domain", m["domain"]), ("campaign", m["campaign_id"])):
            row = sums[(dimension, value or "", m["status"], bounce)]
            for i, part in enumerate(contribution(m)):
                row[i] += part
    return {key: tuple(row) for key, row in sums.items()}


def recounted_depths(messages: list[dict[str, Any]]) -> dict[tuple[str, ...], int]:
    depths: Counter[tuple[str, ...]] = Counter()
    for m in messages:
        if m["status"] not in IN_QUEUE:
            continue
        tenant, domain, campaign = m["tenant_id"] or "", m["domain"], m["campaign_id"] or ""
        depths[("tenant", tenant, "domain", domain)] += 1
        if campaign:
            depths[("tenant", tenant, "campaign", campaign)] += 1
            depths[("domain", domain, "campaign", campaign)] += 1
    return dict(depths)


async def kept_counts(services: Services) -> dict[tuple[str, ...], tuple[int, ...]]:
    m = MetricsCountRow
    key = (m.dimension, m.value, m.status, m.bounce_classification)
    sums = (m.messages, m.size_bytes, m.retries, m.retried, m.created_seconds, m.delivery_ms)
    async with services.sessions() as session:
        rows = await session.execute(select(*key, *sums).where(m.messages != 0))
    return {tuple(row[:4]): tuple(int(n) for n in row[4:]) for row in rows}


async def kept_depths(services: Services) -> dict[tuple[str, ...], int]:
    d = MetricsDepthRow
    async with services.sessions() as session:
        rows = await session.execute(
            select(d.dimension, d.value, d.breakdown, d.item, d.messages).where(d.messages != 0)
        )
    return {tuple(row[:4]): int(row[4]) for row in rows}


def top(counts: Counter[str]) -> dict[str, int]:
    ranked = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:TOP_BREAKDOWN])


def recounted_metrics(messages: list[dict[str, Any]], scope: dict[str, str]) -> dict[str, Any]:
    """The fields of QueueMetrics that come from the counters, as README "Metrics" defines them."""
    wanted = [
        m
        for m in messages
        if all((m[field] or "") == (value.lower() if field == "domain" else value) for field, value in scope.items())
    ]
    queued = [m for m in wanted if m["status"] in IN_QUEUE]
    delivered = [contribution(m)[5] for m in wanted if m["status"] == "delivered"]
    created = sum(contribution(m)[4] for m in queued)
    by_status = Counter(S(m["status"]) for m in wanted)
    retried = sum(contribution(m)[3] for m in wanted)
    return {
        "total_messages": len(wanted),
        "messages_by_status": {s: by_status[s] for s in S},
        "queue_depth": len(queued),
        "queue_depth_by_domain": top(Counter(m["domain"] for m in queued)),
        "queue_depth_by_campaign": top(Counter(m["campaign_id"] for m in queued if m["campaign_id"])),
        "total_retries": sum(contribution(m)[2] for m in wanted),
        "retry_rate": round(100.0 * retried / len(wanted), 4) if wanted else 0.0,
        "bounce_rate": round(100.0 * by_status[S.bounced] / len(wanted), 4) if wanted else 0.0,
        "bounces_by_type": {b: sum(1 for m in wanted if m["bounce_classification"] == b.value) for b in BounceType},
        "total_size_bytes": sum(m["size_bytes"] for m in queued),
        "average_queue_time": max(0.0, NOW.timestamp() - created / len(queued)) if queued else 0.0,
        "average_delivery_time": sum(delivered) / len(delivered) / 1000.0 if delivered else 0.0,
    }


async def assert_counted_as_recounted(services: Services) -> None:
    messages = await mirrored(services)
    assert await kept_counts(services) == recounted_counts(messages)
    assert await kept_depths(services) == recounted_depths(messages)
    for scope in SCOPES:
        answered = await services.queues.metrics(now=NOW, **scope)
        expected = recounted_metrics(messages, scope)
        assert {field: getattr(answered, field) for field in expected} == expected, scope


async def test_counters_and_metrics_equal_a_recount_through_inserts_changes_and_deletes(services: Services) -> None:
    async with services.sessions.begin() as session:
        await insert_new(session, varied_messages(300, seed=5))
    await assert_counted_as_recounted(services)
    c = TABLE.c
    async with services.sessions.begin() as session:  # status changes, as the projection and an operation make them
        queued = c.status.in_(IN_QUEUE)
        await session.execute(
            TABLE.update()
            .where(queued, c.domain == "gmail.com")
            .values(status="delivered", delivered_at=BASE_TIME + timedelta(days=2), num_attempts=2)
        )
        await session.execute(
            TABLE.update().where(c.status == "ready").values(status="deferred", bounce_classification="soft")
        )
        await session.execute(TABLE.update().where(queued, c.tenant_id == "globex").values(campaign_id="summer"))
        await session.execute(TABLE.update().where(c.status == "scheduled").values(size_bytes=c.size_bytes + 1))
    await assert_counted_as_recounted(services)
    async with services.sessions.begin() as session:  # a purge's cancellation, then rows deleted
        await session.execute(
            TABLE.update().where(c.status.in_(IN_QUEUE), c.tenant_id == "acme").values(status="cancelled")
        )
        await session.execute(delete(MessageRow).where(MessageRow.domain == "yahoo.com"))
        await session.execute(delete(MessageRow).where(MessageRow.tenant_id.is_(None)))
    await assert_counted_as_recounted(services)
    assert await drop_empty_metrics_counts(services.engine) > 0  # yahoo.com's rows and acme's queued pairs, now 0
    async with services.sessions() as session:
        assert not await session.scalar(select(func.count()).where(MetricsDepthRow.messages == 0))
    async with services.sessions.begin() as session:  # an emptied key counts again
        await insert_new(session, [make_message(domain="yahoo.com", tenant_id="acme", campaign_id="spring")])
    await assert_counted_as_recounted(services)


async def test_counters_follow_the_mirror_projection_s_upserts(services: Services) -> None:
    await append(services, traffic(30, start=NOW - timedelta(hours=1)))
    await services.projections.catch_up()
    async with services.sessions.begin() as session:
        await insert_new(session, varied_messages(50, seed=9))
    messages = await mirrored(services)
    assert {m["status"] for m in messages} & set(IN_QUEUE) and {m["status"] for m in messages} & {
        s.value for s in TERMINAL_STATUSES
    }
    await assert_counted_as_recounted(services)


async def test_messages_without_a_campaign_are_one_scope_for_counts_windows_and_ages(services: Services) -> None:
    # campaign_id '' asks for the messages without a campaign: every part of the answer reads it so (the time
    # windows had read it as no filter at all, and the queued ages as a campaign named '').
    now = BASE_TIME + timedelta(minutes=30)
    queued = MessageQueueStatus.deferred
    without = [
        make_message(campaign_id=None, status=queued, created_at=BASE_TIME + timedelta(minutes=m)) for m in (1, 2)
    ]
    with_one = [
        make_message(campaign_id="spring", status=queued, created_at=BASE_TIME + timedelta(minutes=m))
        for m in (3, 4, 5)
    ]
    async with services.sessions.begin() as session:
        await insert_new(session, [*without, *with_one])
    metrics = await services.queues.metrics(campaign_id="", now=now)
    assert metrics.total_messages == metrics.queue_depth == 2
    assert metrics.oldest_message_age == (now - without[0].created_at).total_seconds()
    assert metrics.newest_message_age == (now - without[1].created_at).total_seconds()
    assert metrics.messages_last_hour == 2
    fleet = await services.queues.metrics(now=now)
    assert fleet.total_messages == 5 and fleet.newest_message_age == (now - with_one[-1].created_at).total_seconds()
