"""What an operation's target reaches on kumod: exactly the queues asked for, refused otherwise, and for a
tenant-bound key never a queue of another tenant."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from adapters import http as node_http
from controlplane.services import Services
from tests import kumod_rules
from tests.controlplane.api_client import api, bearer
from tests.fake_kumod import FakeKumod, register

QUEUES = {
    "acme@gmail.com!relay.example": 10,
    "acme@gmail.com": 20,
    "beta@gmail.com!relay.example": 30,
    "spring:beta@yahoo.com": 40,
}


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


@contextlib.asynccontextmanager
async def one_node(services: Services, *, synced: bool = True) -> AsyncIterator[tuple[Any, dict[str, str], FakeKumod]]:
    """The app, an operator key and one stand-in kumod holding QUEUES (synced into fleet state unless told not)."""
    kumod = FakeKumod(dict(QUEUES))
    with respx.mock:
        respx.route(host="kumo-1.test").mock(side_effect=kumod)
        async with api(services.settings) as client:
            headers = await bearer(services, "fleet:manage", "queue:manage")
            await register(client, headers, "kumo-1")
            if synced:
                await client.post("/api/v1/nodes/sync", headers=headers)
            yield client, headers, kumod


async def operate(client: Any, headers: dict[str, str], **body: Any) -> httpx.Response:
    response: httpx.Response = await client.post("/api/v1/operations", json={"reason": "test", **body}, headers=headers)
    return response


async def test_a_routing_domain_suspension_reaches_only_that_routing_domains_queues(services: Services) -> None:
    async with one_node(services) as (client, headers, kumod):
        response = await operate(client, headers, operation="suspend", routing_domain="relay.example")
        assert response.status_code == 200, response.text
        [body] = kumod.posted("/api/admin/suspend/v1")
        reached = {q for q in QUEUES if kumod_rules.selects("suspend", body, q)}
        assert reached == {"acme@gmail.com!relay.example", "beta@gmail.com!relay.example"}
        [outcome] = response.json()["nodes"]
        assert outcome["queue_names"] == sorted(reached)
        queues = {q["queue_name"]: q for q in (await client.get("/api/v1/queues", headers=headers)).json()["data"]}
        assert queues["acme@gmail.com!relay.example"]["queue_state"] == "suspended"
        assert queues["acme@gmail.com"]["queue_state"] == "active"  # the hold is kept by name, not read as "all"
        await client.post("/api/v1/nodes/sync", headers=headers)  # kumod lists it naming nothing: names are kept
        queues = {q["queue_name"]: q for q in (await client.get("/api/v1/queues", headers=headers)).json()["data"]}
        assert queues["acme@gmail.com"]["queue_state"] == "active"
        resumed = await operate(client, headers, operation="resume", routing_domain="relay.example")
        assert resumed.json()["status"] == "done" and kumod.suspensions == {}


async def test_a_node_never_synced_is_not_sent_a_routing_domain_suspension(services: Services) -> None:
    async with one_node(services, synced=False) as (client, headers, kumod):
        response = await operate(client, headers, operation="suspend", routing_domain="relay.example")
        [outcome] = response.json()["nodes"]
        assert response.json()["status"] == "failed" and "never synced" in outcome["result"]["errors"][0]
        assert kumod.posted("/api/admin/suspend/v1") == []


async def test_targets_kumod_cannot_be_told_exactly_are_refused_with_422_naming_the_field(services: Services) -> None:
    async with one_node(services, synced=False) as (client, headers, kumod):
        # kumod's rebind has no queue_names, and "acme@gmail.com" as criteria would reach every campaign of it
        retry = await operate(client, headers, operation="retry", queue_name="acme@gmail.com")
        assert retry.status_code == 422 and retry.json()["field"] == "queue_name"
        clash = await operate(client, headers, operation="bounce", queue_name="acme@gmail.com", tenant="beta")
        assert clash.status_code == 422 and clash.json()["field"] == "queue_name"
        assert [r for r in kumod.requests if r[0] != "GET"] == []


async def test_every_queue_is_targeted_only_when_asked_for_by_name(services: Services) -> None:
    async with one_node(services, synced=False) as (client, headers, kumod):
        assert (await operate(client, headers, operation="suspend")).status_code == 400
        mixed = await operate(client, headers, operation="suspend", everything=True, domain="gmail.com")
        assert mixed.status_code == 400 and mixed.json()["field"] == "everything"
        assert kumod.posted("/api/admin/suspend/v1") == []
        everything = await operate(client, headers, operation="suspend", everything=True)
        assert everything.status_code == 200, everything.text
        assert kumod.posted("/api/admin/suspend/v1") == [{"reason": "test"}]


async def test_a_tenant_bound_key_cannot_reach_another_tenants_queues(services: Services) -> None:
    async with one_node(services) as (client, admin, kumod):
        theirs = await operate(client, admin, operation="suspend", tenant="beta", domain="gmail.com")
        acme = await bearer(services, "queue:manage", tenant="acme")
        for body in (
            {"operation": "suspend", "tenant": "acme", "queue_name": "beta@gmail.com!relay.example"},
            {"operation": "suspend", "queue_name": "spring:beta@yahoo.com"},
            {"operation": "suspend", "tenant": "beta", "domain": "gmail.com"},
            {"operation": "bounce", "everything": True},
            {"operation": "rebind", "domain": "gmail.com", "metadata": {"data": {"tenant": "beta"}}},
            {"operation": "resume", "metadata": {"suspension_id": theirs.json()["nodes"][0]["reference"]}},
        ):
            refused = await operate(client, acme, **body)
            assert refused.status_code in (403, 404), (body, refused.text)
        assert len(kumod.posted("/api/admin/suspend/v1")) == 1 and kumod.posted("/api/admin/bounce/v1") == []
        mine = await operate(client, acme, operation="suspend", domain="gmail.com")  # the tenant is filled in
        assert mine.status_code == 200 and kumod.posted("/api/admin/suspend/v1")[-1]["tenant"] == "acme"
        listed = (await client.get("/api/v1/operations", headers=acme)).json()
        assert [o["id"] for o in listed] == [mine.json()["id"]]
        other = await client.get(f"/api/v1/operations/{theirs.json()['id']}", headers=acme)
        assert other.status_code == 404


async def test_a_rebind_by_a_tenant_bound_key_keeps_messages_in_its_tenant(services: Services) -> None:
    async with one_node(services) as (client, _, kumod):
        acme = await bearer(services, "queue:manage", tenant="acme")
        for data in ({"queue": "spring:beta@yahoo.com"}, {"queue": "yahoo.com"}, {"tenant": "beta"}, {"pool": "x"}):
            body = {"operation": "rebind", "domain": "gmail.com", "metadata": {"data": data}}
            refused = await operate(client, acme, **body)
            assert refused.status_code == 403 and refused.json()["field"] == "metadata", (data, refused.text)
        allowed = {"operation": "rebind", "domain": "gmail.com", "metadata": {"data": {"queue": "warm:acme@gmail.com"}}}
        assert (await operate(client, acme, **allowed)).status_code == 200
        assert [b["data"] for b in kumod.posted("/api/admin/rebind/v1")] == [{"queue": "warm:acme@gmail.com"}]


async def test_domains_are_sent_in_lower_case_as_kumod_names_its_queues(services: Services) -> None:
    async with one_node(services) as (client, headers, kumod):
        done = await operate(client, headers, operation="purge", domain="GMAIL.COM", tenant="acme")
        assert done.json()["status"] == "done"
        [body] = kumod.posted("/api/admin/bounce/v1")
        assert body["domain"] == "gmail.com" and body["duration"] == "1s"  # a purge leaves no standing bounce


async def test_a_bounce_by_routing_domain_reads_back_from_kumod_as_that_routing_domain_only(services: Services) -> None:
    async with one_node(services) as (client, headers, _):
        body = {"operation": "bounce", "tenant": "beta", "routing_domain": "relay.example", "duration": "1h"}
        assert (await operate(client, headers, **body)).json()["status"] == "done"
        await client.post("/api/v1/nodes/sync", headers=headers)
        queues = {q["queue_name"]: q for q in (await client.get("/api/v1/queues", headers=headers)).json()["data"]}
        assert (
            queues["beta@gmail.com!relay.example"]["bounced_by"] and not queues["spring:beta@yahoo.com"]["bounced_by"]
        )


async def test_a_sync_that_read_the_node_before_a_suspension_was_made_keeps_its_queue_names(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_node(services) as (client, headers, kumod):
        real_read = services.fleet_state._read  # a sync that reads the node now and writes after the operation
        read = asyncio.Event()
        go = asyncio.Event()

        async def slow_read(row: Any) -> Any:
            snapshot = await real_read(row)
            read.set()
            await go.wait()
            return snapshot

        monkeypatch.setattr(services.fleet_state, "_read", slow_read)
        sync = asyncio.create_task(services.fleet_state.sync())
        await read.wait()
        done = await operate(client, headers, operation="suspend", tenant="acme", routing_domain="relay.example")
        assert done.json()["status"] == "done"
        go.set()
        await sync
        monkeypatch.setattr(services.fleet_state, "_read", real_read)
        await client.post("/api/v1/nodes/sync", headers=headers)  # kumod now lists it, naming nothing
        acme = await bearer(services, "queue:manage", tenant="acme")
        [hold] = (await client.get("/api/v1/suspensions", headers=acme)).json()
        assert hold["queue_names"] == ["acme@gmail.com!relay.example"] and hold["tenant"] == "acme"
        queues = {q["queue_name"]: q for q in (await client.get("/api/v1/queues", headers=headers)).json()["data"]}
        assert queues["spring:beta@yahoo.com"]["queue_state"] == "active"
        assert (await operate(client, acme, operation="resume", routing_domain="relay.example")).json()[
            "status"
        ] == "done"
        assert kumod.suspensions == {}
