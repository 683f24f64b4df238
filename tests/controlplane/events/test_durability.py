"""Nothing accepted is lost: the database-down path spools and replays; arrival order never changes the mirror."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select

from adapters.kumomta.events import record_decoder
from adapters.kumomta.log_source import KUMOMTA
from adapters.kumomta.mapping import message_uuid
from controlplane.db.engine import create_engine, session_factory
from controlplane.db.partitions import apply_retention, ensure_partitions, partition_name
from controlplane.db.tables import DeadLetterRow, EventRow, MessageRow
from controlplane.events.service import IngestPipeline, decode_body, write_group
from controlplane.projections import standard_projections
from controlplane.projections.service import ProjectionService
from controlplane.services import Services
from controlplane.settings import Settings
from tests.controlplane.api_client import api, bearer
from tests.pg_faults import RefusingPostgres
from tests.support import kumomta_fixture_counts, kumomta_records

CLOSED_PORT_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
EVENTS, MESSAGES = kumomta_fixture_counts()  # what every fixture record, ingested once, stores


async def count(services: Services, table: type) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_with_the_database_unreachable_records_are_spooled_then_replayed(
    services: Services, tmp_path: Path
) -> None:
    unreachable = create_engine(Settings(database_url=CLOSED_PORT_URL))
    spool_dir = tmp_path / "spool"
    down = IngestPipeline(session_factory(unreachable), spool_dir, 1000)
    await down.start()
    records, dead, _ = decode_body(
        b"[" + b",".join(kumomta_records().values()) + b', {"type": "x"}]', source=KUMOMTA, api_key="mta", tenant=None
    )
    accepted, duplicates, spooled, _ = await down.submit(records, dead)
    await down.stop()
    await unreachable.dispose()
    assert (accepted, duplicates, spooled) == (EVENTS, 0, EVENTS)
    assert len(list(spool_dir.glob("*.spool"))) == 1
    assert await count(services, EventRow) == 0

    up = IngestPipeline(services.sessions, spool_dir, 1000)
    await up.start()  # finds the spool and replays it
    for _ in range(100):
        if not list(spool_dir.glob("*.spool")):
            break
        await asyncio.sleep(0.05)
    await up.stop()
    assert list(spool_dir.glob("*.spool")) == []
    assert await count(services, EventRow) == EVENTS
    assert await count(services, DeadLetterRow) == 1
    await services.projections.catch_up()
    assert await count(services, MessageRow) == MESSAGES


async def submit_every_fixture(engine: Any, spool_dir: Path) -> Any:
    """Every KumoMTA fixture record, submitted in one request to a pipeline writing through ``engine``."""
    pipeline = IngestPipeline(session_factory(engine), spool_dir, 1000)
    await pipeline.start()
    records, dead, _ = decode_body(
        b"[" + b",".join(kumomta_records().values()) + b"]", source=KUMOMTA, api_key=None, tenant=None
    )
    try:
        return await asyncio.wait_for(pipeline.submit(records, dead), 10)
    finally:
        await pipeline.stop()
        await engine.dispose()


@pytest.mark.parametrize("sqlstate", ["57P03", "53300"])
async def test_a_server_refusing_connections_as_it_starts_or_stops_gets_the_group_spooled(
    tmp_path: Path, sqlstate: str
) -> None:
    async with RefusingPostgres(sqlstate) as server:
        outcome = await submit_every_fixture(create_engine(Settings(database_url=server.url)), tmp_path / "spool")
    assert outcome[:3] == (EVENTS, 0, EVENTS)
    assert len(list((tmp_path / "spool").glob("*.spool"))) == 1


async def test_the_database_going_away_while_a_refused_group_is_isolated_spools_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/unused.db"))
    calls: list[int] = []

    async def refused_then_gone(session: Any, records: Any, dead: Any) -> set[bytes]:
        calls.append(len(records))
        if len(calls) == 1:  # the group is refused for its content: the writer isolates record by record
            raise sa_exc.DataError("INSERT …", None, ValueError("value too long"))
        raise ConnectionResetError(104, "Connection reset by peer")  # and meanwhile the server went away

    monkeypatch.setattr("controlplane.events.service.write_group", refused_then_gone)
    outcome = await submit_every_fixture(engine, tmp_path / "spool")
    assert outcome[:3] == (EVENTS, 0, EVENTS)
    assert len(list((tmp_path / "spool").glob("*.spool"))) == 1


async def test_the_endpoint_answers_202_while_the_database_is_down(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's own database answers (keys are checked there); its ingest writer points at a closed port.
    unreachable = create_engine(Settings(database_url=CLOSED_PORT_URL))
    spool_dir = tmp_path / "spool"

    class PipelineOnClosedPort(IngestPipeline):
        def __init__(self, _sessions: object, _spool: Path, max_batch: int, writers: int = 1) -> None:
            super().__init__(session_factory(unreachable), spool_dir, max_batch, writers)

    monkeypatch.setattr("controlplane.services.IngestPipeline", PipelineOnClosedPort)
    key = await bearer(services, "events:ingest")
    async with api(services.settings) as client:
        response = await client.post(
            "/api/v1/events/ingest/kumomta", content=kumomta_records()["log_bounce"], headers=key
        )
    await unreachable.dispose()
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "spooled": 1}
    assert await count(services, EventRow) == 0
    replayer = IngestPipeline(services.sessions, spool_dir, 1000)
    for path in sorted(spool_dir.glob("*.spool")):
        await replayer.replay_file(path)
    assert await count(services, EventRow) == 1
    assert list(spool_dir.glob("*.spool")) == []


async def test_a_connection_killed_in_the_middle_of_a_write_spools_the_group_and_loses_nothing(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if services.settings.is_sqlite:
        pytest.skip("a server connection to kill exists on Postgres only")
    copy = asyncpg.Connection.copy_records_to_table
    killed: list[int] = []

    async def killed_before_copy(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if not killed:  # the server ends this session mid-transaction, as a restart or an operator would
            killed.append(1)
            await self.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return await copy(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", killed_before_copy)
    monkeypatch.setattr("controlplane.db.events.SMALL_GROUP", 0)  # these few records take the COPY path too
    spool_dir = tmp_path / "spool"
    pipeline = IngestPipeline(services.sessions, spool_dir, 1000)
    await pipeline.start()
    records, dead, _ = decode_body(
        b"[" + b",".join(kumomta_records().values()) + b"]", source=KUMOMTA, api_key=None, tenant=None
    )
    first = await pipeline.submit(records[:4], dead)
    assert first[:3] == (4, 0, 4)  # acknowledged from the spool
    assert len(list(spool_dir.glob("*.spool"))) == 1
    # The next group goes to the database on a fresh connection, and the spooled one follows it.
    assert (await pipeline.submit(records[4:], []))[:3] == (EVENTS - 4, 0, 0)
    for _ in range(100):
        if not list(spool_dir.glob("*.spool")):
            break
        await asyncio.sleep(0.05)
    await pipeline.stop()
    assert list(spool_dir.glob("*.spool")) == []
    assert await count(services, EventRow) == EVENTS
    await services.projections.catch_up()
    assert await count(services, MessageRow) == MESSAGES


async def test_concurrent_writers_store_each_record_once_and_count_the_rest_as_duplicates(
    services: Services, tmp_path: Path
) -> None:
    writers = 1 if services.settings.is_sqlite else 3  # as Services.start chooses
    pipeline = IngestPipeline(services.sessions, tmp_path / "spool", max_batch=3, writers=writers)
    await pipeline.start()
    body = b"[" + b",".join(kumomta_records().values()) + b"]"
    submissions = [decode_body(body, source=KUMOMTA, api_key=None, tenant=None) for _ in range(6)]
    outcomes = await asyncio.gather(*(pipeline.submit(records, dead) for records, dead, _ in submissions))
    await pipeline.stop()
    assert sum(o.accepted for o in outcomes) == EVENTS
    assert sum(o.duplicates for o in outcomes) == 5 * EVENTS
    assert await count(services, EventRow) == EVENTS
    await services.projections.catch_up()
    assert await count(services, MessageRow) == MESSAGES


async def test_replaying_a_spool_file_twice_adds_nothing(services: Services, tmp_path: Path) -> None:
    records, dead, _ = decode_body(kumomta_records()["log_delivery"], source=KUMOMTA, api_key=None, tenant=None)
    async with services.sessions.begin() as session:
        first = await write_group(session, records, dead)
    async with services.sessions.begin() as session:
        second = await write_group(session, records, dead)
    assert len(first.inserted) == 1 and second.inserted == set()
    assert await count(services, EventRow) == 1


def lifecycle(recipient: str, attempts: int, outcome: str) -> list[bytes]:
    """A message's records: Reception, some TransientFailures, then the outcome, one minute apart."""
    base = json.loads(kumomta_records()["log_transient_failure"])
    start = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    records = []
    kinds = ["Reception"] + ["TransientFailure"] * attempts + [outcome]
    for n, kind in enumerate(kinds):
        at = start + timedelta(minutes=n)
        record = base | {
            "type": kind,
            "recipient": recipient,
            "num_attempts": max(0, n),
            "event_time": at.isoformat().replace("+00:00", "Z"),
            "timestamp": int(at.timestamp()),
            "bounce_classification": "InvalidRecipient" if kind in ("Bounce", "OOB") else "SpamBlock",
        }
        record["response"] = dict(base["response"], code=250 if kind in ("Delivery", "Reception") else 550)
        records.append(json.dumps(record).encode())
    return records


async def mirror_after(url: str, spool: Path, batches: list[list[bytes]]) -> list[Any]:
    """The mirror after the batches arrive one by one, each projected before the next arrives."""
    engine = create_engine(Settings(database_url=url))
    sessions = session_factory(engine)
    projections = ProjectionService(sessions, standard_projections())
    try:
        async with sessions.begin() as session:
            await session.execute(MessageRow.__table__.delete())
            await session.execute(EventRow.__table__.delete())
        for batch in batches:
            records, dead, _ = decode_body(b"[" + b",".join(batch) + b"]", source=KUMOMTA, api_key=None, tenant=None)
            async with sessions.begin() as session:
                await write_group(session, records, dead)
            await projections.catch_up()
        async with sessions() as session:
            rows = (await session.execute(select(MessageRow.__table__).order_by(MessageRow.id))).all()
        return [tuple(v for k, v in r._mapping.items() if k != "updated_at") for r in rows]
    finally:
        await engine.dispose()


messages = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["Delivery", "Bounce", "Expiration", "AdminBounce", "OOB"])),
    min_size=1,
    max_size=3,
)


def check_order_independence(url: str, spool: Path, plan: list[tuple[int, str]], seed: int, cuts: int) -> None:
    records = [
        r for n, (attempts, outcome) in enumerate(plan) for r in lifecycle(f"user{n}@yahoo.com", attempts, outcome)
    ]
    in_order = asyncio.run(mirror_after(url, spool, [records]))
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    points = sorted(random.Random(seed + 1).sample(range(1, len(shuffled)), min(cuts, len(shuffled) - 1)))
    batches = [shuffled[a:b] for a, b in zip([0, *points], [*points, len(shuffled)], strict=True)]
    assert asyncio.run(mirror_after(url, spool, batches)) == in_order
    assert asyncio.run(mirror_after(url, spool, [[r] for r in reversed(records)])) == in_order


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(plan=messages, seed=st.integers(0, 10_000), cuts=st.integers(0, 4))
def test_the_mirror_does_not_depend_on_arrival_order_on_sqlite(
    tmp_path: Path, plan: list[tuple[int, str]], seed: int, cuts: int
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/order.db"
    if not (tmp_path / "order.db").exists():
        asyncio.run(_migrate(url))
    check_order_independence(url, tmp_path, plan, seed, cuts)


@SETTINGS
@given(plan=messages, seed=st.integers(0, 10_000), cuts=st.integers(0, 4))
def test_the_mirror_does_not_depend_on_arrival_order_on_postgres(
    postgres_url: str, tmp_path: Path, plan: list[tuple[int, str]], seed: int, cuts: int
) -> None:
    check_order_independence(postgres_url, tmp_path, plan, seed, cuts)


async def _migrate(url: str) -> None:
    services = await Services.start(Settings(database_url=url))
    await services.close()


def test_a_late_transient_failure_leaves_a_delivered_message_delivered(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/late.db"
    asyncio.run(_migrate(url))
    reception, failure, delivery = lifecycle("late@yahoo.com", 1, "Delivery")
    rows = asyncio.run(mirror_after(url, tmp_path, [[reception], [delivery], [failure]]))
    message = record_decoder.decode(delivery)
    assert len(rows) == 1 and rows[0][0] == message_uuid(message)
    assert "delivered" in rows[0]


async def test_retention_drops_old_events(services: Services) -> None:
    old = json.loads(kumomta_records()["log_delivery"]) | {
        "event_time": "2026-01-01T00:00:00Z",
        "timestamp": 1767225600,
    }
    records, dead, _ = decode_body(json.dumps([old]).encode() + b"", source=KUMOMTA, api_key=None, tenant=None)
    fresh, _, _ = decode_body(kumomta_records()["log_bounce"], source=KUMOMTA, api_key=None, tenant=None)
    async with services.sessions.begin() as session:
        await write_group(session, records + fresh, dead)
    removed = await apply_retention(services.engine, 30, now=datetime(2026, 11, 23, 12, tzinfo=UTC))
    assert removed >= 1
    assert await count(services, EventRow) == 1


async def test_daily_partitions_are_created_ahead_on_postgres(services: Services) -> None:
    created_now = await ensure_partitions(services.engine, today=datetime(2031, 5, 10, tzinfo=UTC).date())
    if services.engine.dialect.name != "postgresql":
        assert created_now == []
        return
    assert partition_name(datetime(2031, 5, 12).date()) in created_now
    assert await ensure_partitions(services.engine, today=datetime(2031, 5, 10, tzinfo=UTC).date()) == []
