"""The projections follow the event log: in commit order with nothing skipped, exactly once through crashes, one
runner at a time, rebuilt equal to what was built live, and their lag visible."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.kumomta.log_source import KUMOMTA
from controlplane.db.engine import create_engine, session_factory
from controlplane.db.messages import TABLE
from controlplane.db.partitions import drop_empty_counts
from controlplane.db.tables import DeadLetterRow, EventRollupRow, EventRow, MessageCountRow, MessageRow
from controlplane.events.service import decode_body, write_group
from controlplane.projections import standard_projections
from controlplane.projections.log import START, LoggedEvent, read_after
from controlplane.projections.mirror import MirrorProjection
from controlplane.projections.rollups import RollupProjection
from controlplane.projections.service import ProjectionService
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.controlplane.events.test_hostile_records import record

NOW = datetime.now(UTC).replace(microsecond=0)


def traffic(messages: int, *, start: datetime = NOW) -> list[dict[str, Any]]:
    """Reception, then a deferral or not, then a delivery or a bounce, for each message: event-time order."""
    records = []
    for n in range(messages):
        spool_id = uuid.uuid4().hex
        at = start + timedelta(seconds=n)
        domain = ("gmail.com", "yahoo.com", "example.org")[n % 3]
        queue = f"c{n % 2}:acme@{domain}" if n % 4 else domain
        common = {"id": spool_id, "recipient": f"u{n}@{domain}", "queue": queue, "event_time": None}
        records.append(record("log_reception", **common, timestamp=int(at.timestamp()), created=None))
        if n % 3 == 1:
            records.append(record("log_transient_failure", **common, timestamp=int(at.timestamp()) + 60))
        final = "log_delivery" if n % 5 else "log_bounce"
        records.append(record(final, **common, timestamp=int(at.timestamp()) + 120))
    return records


async def append(services: Services, records: Sequence[dict[str, Any]], session: AsyncSession | None = None) -> None:
    decoded, dead, rejected = decode_body(json.dumps(list(records)).encode(), source=KUMOMTA, api_key=None, tenant=None)
    assert rejected == []
    if session is not None:
        await write_group(session, decoded, dead)
        return
    async with services.sessions.begin() as own:
        await write_group(own, decoded, dead)


async def rollup_totals(services: Services) -> dict[str, int]:
    r = EventRollupRow
    async with services.sessions() as session:
        rows = await session.execute(
            select(r.metric, func.sum(r.events)).where(r.dimension == "all").group_by(r.metric)
        )
        return {metric: int(n) for metric, n in rows if not metric.startswith("delivery_le_")}


async def recount(services: Services) -> dict[str, int]:
    async with services.sessions() as session:
        rows = await session.execute(select(EventRow.type, func.count()).group_by(EventRow.type))
        return {kind: int(n) for kind, n in rows}


async def mirror_rows(services: Services) -> list[dict[str, Any]]:
    async with services.sessions() as session:
        rows = (await session.execute(select(TABLE).order_by(TABLE.c.id))).mappings().all()
    return [{k: v for k, v in row.items() if k != "updated_at"} for row in rows]


async def counts_rows(services: Services) -> set[tuple[Any, ...]]:
    async with services.sessions() as session:
        rows = (await session.execute(select(MessageCountRow.__table__).where(MessageCountRow.messages != 0))).all()
    return {tuple(row) for row in rows}


async def test_the_mirror_and_the_rollups_follow_the_log_only_when_projected(services: Services) -> None:
    await append(services, traffic(12))
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(MessageRow)) == 0  # the append alone
    assert await services.projections.catch_up() > 0
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(MessageRow)) == 12
    assert await rollup_totals(services) == await recount(services)
    assert await services.projections.catch_up() == 0  # nothing twice


async def test_two_transactions_committing_out_of_order_skip_no_event(services: Services) -> None:
    if services.settings.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: its log order is its commit order")
    first, second = traffic(1), traffic(1, start=NOW + timedelta(minutes=5))
    engine = create_engine(services.settings)
    try:
        async with session_factory(engine)() as early, early.begin():
            # The early transaction takes its place in the log (its id) first, and commits last.
            await early.execute(text("SELECT pg_current_xact_id()"))
            await append(services, second)  # a later transaction commits while the early one is open
            await append(services, first, session=early)
            async with services.sessions() as session:
                assert await read_after(session, START, 100) == []  # the committed one is past the horizon
            assert await services.projections.catch_up(wait_seconds=0) == 0
        async with services.sessions() as session:
            events = await read_after(session, START, 100)
        assert [e.position.tx for e in events] == sorted(e.position.tx for e in events)
        assert len(events) == len(first) + len(second)
        await services.projections.catch_up()
        assert await rollup_totals(services) == await recount(services)
        async with services.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(MessageRow)) == 2
    finally:
        await engine.dispose()


async def test_on_sqlite_each_write_transaction_takes_the_next_place_in_the_log(services: Services) -> None:
    if not services.settings.is_sqlite:
        pytest.skip("Postgres places events by transaction id")
    for n in range(3):
        await append(services, traffic(1, start=NOW - timedelta(hours=n)))  # earlier events in later transactions
    async with services.sessions() as session:
        events = await read_after(session, START, 100)
    assert [e.position.tx for e in events] == sorted(e.position.tx for e in events)
    assert len({e.position.tx for e in events}) == 3


class Crashing:
    """A projection that dies after its real work, before the pass commits: as a process killed mid-batch."""

    def __init__(self, inner: Any, crashes: int) -> None:
        self.inner, self.name, self.crashes = inner, inner.name, crashes

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
        await self.inner.apply(session, events)
        if self.crashes:
            self.crashes -= 1
            raise ConnectionResetError("killed mid-batch")

    async def reset(self, session: AsyncSession) -> None:
        await self.inner.reset(session)


async def test_a_projection_killed_mid_batch_resumes_without_loss_or_double_counting(services: Services) -> None:
    await append(services, traffic(30))
    rollups, mirror = Crashing(RollupProjection(), 3), Crashing(MirrorProjection(), 2)
    crashing = ProjectionService(services.sessions, [rollups, mirror])
    interrupted = 0
    while True:
        try:
            await crashing.catch_up()
            break
        except ConnectionResetError:
            interrupted += 1
    assert rollups.crashes == mirror.crashes == 0  # every crash happened
    assert 3 <= interrupted <= 5  # lanes side by side (Postgres) may both die in one pass
    assert await rollup_totals(services) == await recount(services)
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(MessageRow)) == 30


class Watched:
    """Counts how many runners are inside ``apply`` at once."""

    active = 0
    most = 0

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
        Watched.active += 1
        Watched.most = max(Watched.most, Watched.active)
        try:
            await asyncio.sleep(0.02)
            await self.inner.apply(session, events)
        finally:
            Watched.active -= 1

    async def reset(self, session: AsyncSession) -> None:
        await self.inner.reset(session)


async def test_two_runners_never_run_the_same_projection_at_once(services: Services) -> None:
    if services.settings.is_sqlite:
        pytest.skip("one process: SQLite serializes write transactions anyway; the advisory lock is Postgres'")
    await append(services, traffic(40))
    engines = [create_engine(services.settings) for _ in range(2)]
    try:
        runners = [ProjectionService(session_factory(e), [Watched(RollupProjection())]) for e in engines]
        for runner in runners:
            runner._batch_size["rollups"] = 7  # many passes, so the two runners meet
        Watched.most = 0
        await asyncio.gather(*(runner.catch_up() for runner in runners))
        assert Watched.most == 1
    finally:
        for engine in engines:
            await engine.dispose()
    assert await rollup_totals(services) == await recount(services)


async def test_a_rebuilt_projection_equals_the_one_built_live(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await append(services, traffic(25))
    await services.projections.catch_up()
    await append(services, traffic(10, start=NOW + timedelta(hours=1)))  # live, in a second round
    await services.projections.catch_up()
    live_mirror, live_counts, live_rollups = await mirror_rows(services), await counts_rows(services), None
    async with services.sessions() as session:
        live_rollups = set((await session.execute(select(EventRollupRow.__table__))).all())
    progress: list[tuple[int, int]] = []
    logged = sum((await recount(services)).values())
    # Many small batches in the rebuild's one transaction: a message's events fall in different batches.
    monkeypatch.setattr("controlplane.projections.service.BATCH", 7)
    assert await services.projections.rebuild("mirror", lambda done, total: progress.append((done, total))) == logged
    assert await services.projections.rebuild("rollups") == logged
    assert progress[-1] == (logged, logged)
    assert await mirror_rows(services) == live_mirror
    assert await counts_rows(services) == live_counts
    async with services.sessions() as session:
        assert set((await session.execute(select(EventRollupRow.__table__))).all()) == live_rollups
    assert await services.projections.catch_up() == 0  # the checkpoints moved with the rebuild


async def test_an_event_a_projection_cannot_apply_is_kept_as_a_dead_letter_and_stepped_over(
    services: Services,
) -> None:
    records = traffic(6)
    poisoned = records[4]["id"]

    class Refusing:
        name = "mirror"

        async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
            if any(poisoned in e.payload and e.type == "TransientFailure" for e in events):
                raise ValueError("refused by the database")
            await MirrorProjection().apply(session, events)

        async def reset(self, session: AsyncSession) -> None:
            return None

    await append(services, records)
    runner = ProjectionService(services.sessions, [Refusing()])
    await runner.catch_up()
    async with services.sessions() as session:
        letters = (await session.scalars(select(DeadLetterRow))).all()
        mirrored = await session.scalar(select(func.count()).select_from(MessageRow))
    assert len(letters) == 1 and poisoned in letters[0].payload and "TransientFailure" in letters[0].payload
    assert letters[0].error == "projection mirror could not apply it: ValueError: refused by the database"
    assert mirrored == 6  # the message's other events went in
    assert await runner.catch_up() == 0


async def test_the_lag_shows_in_detailed_health_and_in_prometheus_metrics(services: Services) -> None:
    await append(services, traffic(5))
    statuses = {s.name: s for s in await services.projections.status()}
    logged = sum((await recount(services)).values())
    assert statuses["mirror"].events_behind == logged and statuses["rollups"].events_behind == logged
    assert statuses["mirror"].lag_seconds >= 0
    async with api(services.settings) as client:  # this client catches the projections up before reading
        health = (await client.get("/api/v1/health/detailed")).json()
        behind = {p["name"]: p["events_behind"] for p in health["projections"]}
        assert behind == {"mirror": 0, "rollups": 0, "policy_matches": 0, "suppressions": 0}
        reader = await bearer(services, "analytics:read")
        scraped = await client.get("/metrics", headers=reader)
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert 'mtactl_projection_events_behind{projection="mirror"} 0.0' in scraped.text
        assert "# TYPE mtactl_projection_lag_seconds gauge" in scraped.text
        assert (await client.get("/metrics")).status_code == 401


async def recount_mirror(services: Services) -> set[tuple[Any, ...]]:
    c = TABLE.c
    key = (
        c.queue_name,
        c.domain,
        func.coalesce(c.tenant_id, ""),
        func.coalesce(c.campaign_id, ""),
        c.status,
        c.queue_state,
        func.coalesce(c.bounce_classification, ""),
    )
    async with services.sessions() as session:
        rows = await session.execute(select(*key, func.count(), func.sum(c.size_bytes)).group_by(*key))
    return {tuple(row) for row in rows}


async def test_message_counts_equal_a_recount_of_the_mirror_whoever_writes_it(services: Services) -> None:
    await append(services, traffic(20))
    await services.projections.catch_up()
    async with services.sessions.begin() as session:  # writers other than the projection: a purge, a deletion
        await session.execute(TABLE.update().where(TABLE.c.status == "deferred").values(status="cancelled"))
        await session.execute(delete(MessageRow).where(MessageRow.domain == "yahoo.com"))
    recounted = await recount_mirror(services)
    kept = {(*row[:7], row[7], row[8]) for row in await counts_rows(services)}
    assert kept == recounted
    async with services.sessions() as session:
        zeroes = await session.scalar(select(func.count()).where(MessageCountRow.messages == 0))
    assert zeroes and await drop_empty_counts(services.engine) == zeroes  # the deleted domain's rows, now empty
    async with services.sessions.begin() as session:  # a message in an emptied key comes back counted
        await session.execute(TABLE.update().where(TABLE.c.status == "cancelled").values(domain="yahoo.com"))
    assert {(*row[:7], row[7], row[8]) for row in await counts_rows(services)} == await recount_mirror(services)


def test_every_standard_projection_has_a_distinct_name() -> None:
    names = [p.name for p in standard_projections()]
    assert sorted(names) == sorted(set(names)) == ["mirror", "policy_matches", "rollups", "suppressions"]
