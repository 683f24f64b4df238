"""Daily limits and sending windows against a real database and a stand-in kumod: usage read from the delivery
rollups, holds made at kumod by ready-queue suspension and released, an operator's resume left alone, ZoneMTA
reported as not holdable, and the routes' contract."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, time, timedelta

import pytest
import respx
from sqlalchemy import select

from adapters import http as node_http
from controlplane.capacity.schema import SendingWindow, SourceSpec
from controlplane.db.tables import AuditRow, JobHeartbeatRow, SourceHoldRow
from controlplane.fleet.schema import NodeCreate
from controlplane.jobs.tasks import enforce_windows, sync_nodes
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.controlplane.events.test_hostile_records import record
from tests.controlplane.projections.test_projections import append
from tests.fake_kumod import FakeKumod
from tests.fake_zonemta import FakeZoneMta

KEY = base64.b64encode(b"s" * 32).decode()
DAY = (datetime.now(UTC) - timedelta(days=1)).date()  # "yesterday" for the clock below: its partition exists
GMAIL = "ip-1->(alt1|alt2)?.gmail-smtp-in.l.google.com@smtp_client"
YAHOO = "ip-2->(mta5|mta6).am0.yahoodns.net@smtp_client"


def utc(day_offset: int, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(DAY + timedelta(days=day_offset), time(hour, minute), tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


def office_hours(limit: int = 1000) -> SourceSpec:
    return SourceSpec(daily_limit=limit, window=SendingWindow(start="08:00", end="20:00", timezone="UTC"))


async def kumo_node(services: Services, kumod: FakeKumod) -> None:
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    await services.fleet.create(
        NodeCreate(name="kumo-1", kind="kumomta", base_url="http://kumo-1.test:8000"), actor="test"
    )
    await sync_nodes(services, "test")


async def test_usage_counts_the_sources_deliveries_since_its_local_midnight(services: Services) -> None:
    deliveries = [
        record("log_delivery", egress_source="ip-1", timestamp=int(at.timestamp()), event_time=None)
        for at in (utc(0, 23, 30), utc(1, 0, 10), utc(1, 9), utc(1, 9, 1))
    ]
    other = record("log_delivery", egress_source="ip-2", timestamp=int(utc(1, 9).timestamp()), event_time=None)
    await append(services, [*deliveries, other])
    await services.projections.catch_up()
    await services.capacity.put("ip-1", office_hours(10), actor="test")
    services.capacity.clock = lambda: utc(1, 10)
    (ip1,) = (await services.capacity.capacity()).data
    assert (ip1.used_today, ip1.remaining_today, ip1.window_open, ip1.holding) == (3, 7, True, False)
    assert ip1.next_window_opens_at == utc(2, 8)
    # In Tokyo (UTC+9) the local day began at 15:00 UTC the day before: all four are today's.
    await services.capacity.put(
        "ip-1", SourceSpec(daily_limit=4, window=SendingWindow(end="24:00", timezone="Asia/Tokyo")), actor="test"
    )
    (ip1,) = (await services.capacity.capacity()).data
    assert (ip1.used_today, ip1.remaining_today, ip1.holding) == (4, 0, True)


@respx.mock
async def test_a_source_outside_its_window_is_held_at_kumod_until_it_opens_and_released_when_it_may_send(
    services: Services,
) -> None:
    kumod = FakeKumod()
    kumod.ready = {GMAIL: 5, YAHOO: 3}
    await kumo_node(services, kumod)
    await services.capacity.put("ip-1", office_hours(), actor="test")
    services.capacity.clock = lambda: utc(1, 21)
    steps = await services.capacity.enforce()
    assert [(s.action, s.path) for s in steps] == [("held", GMAIL)]
    (held,) = kumod.ready_suspensions.values()
    assert held["name"] == GMAIL  # ip-2's path is not touched
    assert held["duration"] == f"{11 * 3600}s"  # kumod ends it by itself when the window opens
    assert await services.capacity.enforce() == []  # idempotent: held once
    assert len(kumod.ready_suspensions) == 1
    report = await services.capacity.capacity()
    assert [(h.node, h.path) for h in report.data[0].held] == [("kumo-1", GMAIL)]

    await services.capacity.put("ip-1", SourceSpec(daily_limit=1000), actor="test")  # all day now
    steps = await services.capacity.enforce()
    assert [(s.action, s.path) for s in steps] == [("released", GMAIL)]
    assert kumod.ready_suspensions == {}
    async with services.sessions() as session:
        assert (await session.scalars(select(SourceHoldRow))).all() == []
        actions = (await session.scalars(select(AuditRow.action).where(AuditRow.action.like("capacity.%")))).all()
    assert sorted(actions) == ["capacity.hold", "capacity.release"]


@respx.mock
async def test_a_hold_past_its_end_is_forgotten_without_asking_kumod(services: Services) -> None:
    kumod = FakeKumod()
    kumod.ready = {GMAIL: 5}
    await kumo_node(services, kumod)
    await services.capacity.put("ip-1", office_hours(), actor="test")
    services.capacity.clock = lambda: utc(1, 21)
    await services.capacity.enforce()
    services.capacity.clock = lambda: utc(2, 8, 1)  # the window opened: kumod's suspension has ended by itself
    deletes_before = [r for r in kumod.requests if r[0] == "DELETE"]
    steps = await services.capacity.enforce()
    assert [s.action for s in steps] == ["released"]
    assert [r for r in kumod.requests if r[0] == "DELETE"] == deletes_before


@respx.mock
async def test_an_operators_resume_is_never_fought(services: Services) -> None:
    kumod = FakeKumod()
    kumod.ready = {GMAIL: 5}
    await kumo_node(services, kumod)
    await services.capacity.put("ip-1", office_hours(limit=0), actor="test")
    services.capacity.clock = lambda: utc(1, 12)  # inside the window, but a limit of 0 is reached
    assert [s.action for s in await services.capacity.enforce()] == ["held"]
    kumod.ready_suspensions.clear()  # kcli resume on the node, or DELETE /api/v1/suspensions/{id}
    assert [s.action for s in await services.capacity.enforce()] == ["left_lifted"]
    assert await services.capacity.enforce() == []
    assert kumod.ready_suspensions == {}
    services.capacity.clock = lambda: utc(2, 12)  # the next day's hold is a new one
    assert [s.action for s in await services.capacity.enforce()] == ["released", "held"]
    assert len(kumod.ready_suspensions) == 1


@respx.mock
async def test_a_zonemta_zone_is_reported_as_not_holdable(services: Services) -> None:
    respx.route(host="zone-1.test").mock(side_effect=FakeZoneMta())
    await services.fleet.create(
        NodeCreate(name="zone-1", kind="zonemta", base_url="http://zone-1.test:12080"), actor="test"
    )
    await services.capacity.put("default", office_hours(), actor="test")
    services.capacity.clock = lambda: utc(1, 3)
    (step,) = await services.capacity.enforce()
    assert (step.node, step.action) == ("zone-1", "refused")
    assert "no pause API" in (step.detail or "")


async def test_the_job_runs_a_pass_and_records_it(services: Services) -> None:
    await enforce_windows(services, "test")
    async with services.sessions() as session:
        assert await session.get(JobHeartbeatRow, "enforce_windows") is not None


async def test_sources_and_capacity_over_http(services: Services) -> None:
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "queue:manage", "analytics:read")
        body = {"daily_limit": 1000, "window": {"start": "08:00", "end": "20:00", "timezone": "Europe/Berlin"}}
        for n in range(30):
            assert (await client.put(f"/api/v1/sources/ip-{n}", json=body, headers=headers)).status_code == 200
        got = (await client.get("/api/v1/sources/ip-0", headers=headers)).json()
        assert (got["daily_limit"], got["window"]["timezone"]) == (1000, "Europe/Berlin")
        assert len((await client.get("/api/v1/sources", headers=headers)).json()["data"]) == 30
        capacity = (await client.get("/api/v1/capacity", headers=headers)).json()["data"]
        assert {c["name"] for c in capacity} >= {"ip-0", "ip-29"}
        assert set(capacity[0]) >= {
            "name",
            "daily_limit",
            "used_today",
            "remaining_today",
            "window_open",
            "next_window_opens_at",
        }
        found = (await client.get("/api/v1/capacity/estimate?messages=100000", headers=headers)).json()
        assert found["sending_days"] in (4, 5)  # 4 before today's window closes, 5 after
        assert sum(d["messages"] for d in found["per_day"]) == 100_000
        await client.put("/api/v1/sources/ip-0", json=body | {"tenants": ["acme"]}, headers=headers)
        acme = (await client.get("/api/v1/capacity/estimate?messages=10&tenant=acme", headers=headers)).json()
        assert (acme["tenant"], acme["sources"]) == ("acme", 30)  # ip-0 is acme's; the 29 others are everyone's
        nobody = (await client.get("/api/v1/capacity/estimate?messages=10&tenant=globex", headers=headers)).json()
        assert (nobody["tenant"], nobody["sources"]) == ("globex", 29)

        bad = await client.put(
            "/api/v1/sources/ip-0", json=body | {"window": {"timezone": "Mars/Olympus"}}, headers=headers
        )
        assert (bad.status_code, bad.json()["field"]) == (400, "window.timezone")
        bad = await client.put(
            "/api/v1/sources/ip-0", json=body | {"window": {"start": "20:00", "end": "08:00"}}, headers=headers
        )
        assert (bad.status_code, bad.json()["field"]) == (400, "window.end")
        bad = await client.put("/api/v1/sources/ip-0", json=body | {"nodes": ["nowhere"]}, headers=headers)
        assert (bad.status_code, bad.json()["field"]) == (400, "nodes")
        assert (await client.delete("/api/v1/sources/ip-0", headers=headers)).status_code == 200
        assert (await client.get("/api/v1/sources/ip-0", headers=headers)).status_code == 404

        bound = await bearer(services, "queue:manage", "analytics:read", tenant="acme")
        assert (await client.get("/api/v1/capacity", headers=bound)).status_code == 403
        assert (await client.put("/api/v1/sources/x", json=body, headers=bound)).status_code == 403
