"""A fleet of a KumoMTA and a ZoneMTA node, end to end through the API: the ZoneMTA node's queues and messages
show beside KumoMTA's, each node takes the operations its MTA can and refuses the others by name, and what
ZoneMTA deleted leaves the mirror's queue."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest
import respx

from adapters import http as node_http
from adapters.zonemta.mapping import recipient_uuid
from controlplane.fleet.state import VANISHED
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.fake_kumod import FakeKumod, register
from tests.fake_zonemta import FakeZoneMta

KEY = base64.b64encode(b"z" * 32).decode()


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


async def add_zonemta(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> None:
    body = {"name": name, "kind": "zonemta", "base_url": f"http://{name}.test:12080"}
    response = await client.post("/api/v1/nodes", json=body, headers=headers)
    assert response.status_code == 201, response.text


def by_node(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {outcome["node"]: outcome for outcome in record["nodes"]}


@respx.mock
async def test_a_mixed_fleet_shows_both_kinds_and_each_node_does_what_its_mta_can(services: Services) -> None:
    kumod = FakeKumod({"acme@gmail.com": 4, "acme@yahoo.com": 2})
    zone = FakeZoneMta()
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    respx.route(host="zone-1.test").mock(side_effect=zone)
    stays = zone.add_message(["carol@yahoo.com"])
    goes = zone.add_message(["dave@gmail.com", "erin@gmail.com"], deferred=3)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage", "email:read")
        await register(client, headers, "kumo-1")
        await add_zonemta(client, headers, "zone-1")
        synced = (await client.post("/api/v1/nodes/sync", headers=headers)).json()
        assert all(s["error"] is None for s in synced), synced

        queues = (await client.get("/api/v1/queues", headers=headers)).json()
        per_node = {(n["node"], q["queue_name"]): n["scheduled"] for q in queues["data"] for n in q["nodes"]}
        assert per_node == {
            ("kumo-1", "acme@gmail.com"): 4,
            ("kumo-1", "acme@yahoo.com"): 2,
            ("zone-1", "gmail.com"): 2,
            ("zone-1", "yahoo.com"): 1,
        }
        assert {(r["node"], r["name"]) for r in queues["ready_queues"]} >= {("zone-1", "default")}
        listed = (await client.get("/api/v1/messages?domain=gmail.com", headers=headers)).json()["data"]
        assert {(m["recipient"], m["status"]) for m in listed} == {
            ("dave@gmail.com", "deferred"),
            ("erin@gmail.com", "deferred"),
        }

        suspend = {"operation": "suspend", "reason": "block", "domain": "gmail.com"}
        record = (await client.post("/api/v1/operations", json=suspend, headers=headers)).json()
        outcomes = by_node(record)
        assert record["status"] == "partial"
        assert outcomes["kumo-1"]["result"]["success"] and outcomes["kumo-1"]["reference"]
        assert "no pause API" in outcomes["zone-1"]["result"]["errors"][0]
        assert [p for m, p, _, _ in zone.requests if m != "GET"] == []  # nothing was sent to ZoneMTA

        cancel = {"operation": "cancel", "reason": "bad import", "domain": "gmail.com"}
        dry = (await client.post("/api/v1/operations", json=cancel | {"dry_run": True}, headers=headers)).json()
        planned = by_node(dry)["zone-1"]
        assert planned["result"]["affected_messages"] == 2 and len(zone.rows) == 3
        assert [m["recipient"] for m in planned["messages"]] == ["dave@gmail.com", "erin@gmail.com"]
        assert "messages" not in by_node(dry)["kumo-1"]  # kumod cannot list its messages
        record = (await client.post("/api/v1/operations", json=cancel, headers=headers)).json()
        outcomes = by_node(record)
        assert record["status"] == "done", record
        assert outcomes["zone-1"]["result"]["affected_messages"] == 2
        assert [(r.id, r.recipient) for r in zone.rows] == [(stays, "carol@yahoo.com")]
        assert kumod.posted("/api/admin/bounce/v1")[0]["domain"] == "gmail.com"

        # No event reported how they ended: once two listings lack them, they are marked gone, not still queued.
        message = f"/api/v1/messages/{recipient_uuid(goes, 'dave@gmail.com')}"
        await client.post("/api/v1/nodes/sync", headers=headers)
        assert (await client.get(message, headers=headers)).json()["status"] == "deferred"  # one listing may miss it
        await client.post("/api/v1/nodes/sync", headers=headers)
        gone = (await client.get(message, headers=headers)).json()
        assert gone["status"] == "cancelled" and gone["last_bounce_reason"] == VANISHED


@respx.mock
async def test_message_ids_reach_exactly_those_messages_on_the_nodes_that_take_them(services: Services) -> None:
    zone = FakeZoneMta()
    respx.route(host="zone-1.test").mock(side_effect=zone)
    ident = zone.add_message(["a@gmail.com", "b@gmail.com"])
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await add_zonemta(client, headers, "zone-1")
        await client.post("/api/v1/nodes/sync", headers=headers)
        body = {"operation": "purge", "reason": "one", "message_ids": [str(recipient_uuid(ident, "b@gmail.com"))]}
        record = (await client.post("/api/v1/operations", json=body, headers=headers)).json()
        assert record["status"] == "done" and record["total"]["affected_messages"] == 1, record
        assert [r.recipient for r in zone.rows] == ["a@gmail.com"]
        unknown = await client.post(
            "/api/v1/operations", json=body | {"message_ids": ["no-such-message"]}, headers=headers
        )
        assert (unknown.status_code, unknown.json()["field"]) == (400, "message_ids")


@respx.mock
async def test_a_tenant_bound_key_reaches_only_its_tenants_messages(services: Services) -> None:
    zone = FakeZoneMta()
    respx.route(host="zone-1.test").mock(side_effect=zone)
    ident = zone.add_message(["a@gmail.com"])
    async with api(services.settings, secret_key=KEY) as client:
        admin = await bearer(services, "fleet:manage", "queue:manage")
        await add_zonemta(client, admin, "zone-1")
        await client.post("/api/v1/nodes/sync", headers=admin)
        bound = await bearer(services, "queue:manage", tenant="acme")
        body = {"operation": "purge", "reason": "one", "message_ids": [str(recipient_uuid(ident, "a@gmail.com"))]}
        refused = await client.post("/api/v1/operations", json=body, headers=bound)
        assert (refused.status_code, refused.json()["field"]) == (400, "message_ids")  # not its tenant's message
        by_domain = await client.post(
            "/api/v1/operations", json={"operation": "cancel", "reason": "x", "domain": "gmail.com"}, headers=bound
        )
        assert by_domain.status_code == 200 and by_domain.json()["nodes"][0]["result"]["affected_messages"] == 0
    assert [r.recipient for r in zone.rows] == ["a@gmail.com"]
    assert [m for m, _, _, _ in zone.requests if m in ("DELETE", "PUT")] == []


async def synced_zone(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    synced = (await client.post("/api/v1/nodes/sync", headers=headers)).json()
    assert all(s["error"] is None for s in synced), synced


@respx.mock
async def test_message_ids_still_reach_the_row_after_an_event_named_the_message_by_its_header(
    services: Services,
) -> None:
    zone = FakeZoneMta()
    respx.route(host="zone-1.test").mock(side_effect=zone)
    ident = zone.add_message(["carol@yahoo.example"], deferred=4, message_id="<hdr-1@sender.example>")
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage", "events:ingest", "email:read")
        await add_zonemta(client, headers, "zone-1")
        await synced_zone(client, headers)
        deferred = {
            "id": ident,
            "seq": "001",
            "action": "DEFERRED",
            "to": "carol@yahoo.example",
            "from": "news@sender.example",
            "messageId": "<hdr-1@sender.example>",
            "defcount": 5,
            "zone": "default",
            "response": "421 try later",
            "_mtactl": {"node": "zone-1", "at": int(time.time() * 1000) + 1000},  # after the listing
        }
        assert (await client.post("/api/v1/events/ingest/zonemta", json=[deferred], headers=headers)).status_code == 202
        mirrored = (
            await client.get(f"/api/v1/messages/{recipient_uuid(ident, 'carol@yahoo.example')}", headers=headers)
        ).json()
        assert mirrored["message_id"] == "<hdr-1@sender.example>"  # the header, as the model says
        body = {"operation": "cancel", "reason": "one", "message_ids": [mirrored["id"]]}
        record = (await client.post("/api/v1/operations", json=body, headers=headers)).json()
        assert record["nodes"][0]["result"]["affected_messages"] == 1, record
    assert zone.rows == []


@respx.mock
async def test_one_listing_that_misses_a_row_does_not_end_it_and_disabled_zones_are_listed(
    services: Services,
) -> None:
    zone = FakeZoneMta(disabled_zones=["transactional"])
    respx.route(host="zone-1.test").mock(side_effect=zone)
    paused = zone.add_message("a@gmail.com", zone="transactional")
    flaky = zone.add_message("b@gmail.com")
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "email:read")
        await add_zonemta(client, headers, "zone-1")
        await synced_zone(client, headers)
        hidden = zone.find(flaky)
        zone.rows = [r for r in zone.rows if r not in hidden]  # a page shifted under the listing: missed once
        await synced_zone(client, headers)
        zone.rows += hidden
        await synced_zone(client, headers)
        zone.rows = [r for r in zone.rows if r not in hidden]  # missed once more: not twice in a row
        await synced_zone(client, headers)
        for ident, recipient in ((paused, "a@gmail.com"), (flaky, "b@gmail.com")):
            message = (await client.get(f"/api/v1/messages/{recipient_uuid(ident, recipient)}", headers=headers)).json()
            assert message["status"] == "ready", message


@respx.mock
async def test_a_purge_that_left_a_locked_row_does_not_mark_it_gone(services: Services) -> None:
    zone = FakeZoneMta()
    respx.route(host="zone-1.test").mock(side_effect=zone)
    zone.add_message("a@gmail.com")
    locked = zone.add_message("b@gmail.com", locked=True)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage", "email:read")
        await add_zonemta(client, headers, "zone-1")
        await synced_zone(client, headers)
        body = {"operation": "purge", "reason": "x", "domain": "gmail.com"}
        record = (await client.post("/api/v1/operations", json=body, headers=headers)).json()
        outcome = record["nodes"][0]
        assert outcome["result"]["affected_messages"] == 1 and "locked" in outcome["note"]
        message = (
            await client.get(f"/api/v1/messages/{recipient_uuid(locked, 'b@gmail.com')}", headers=headers)
        ).json()
        assert message["status"] == "ready"


@respx.mock
async def test_a_listing_moves_a_queued_message_between_due_and_deferred(services: Services) -> None:
    zone = FakeZoneMta()
    respx.route(host="zone-1.test").mock(side_effect=zone)
    later = zone.add_message("a@gmail.com", deferred=2)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "email:read")
        await add_zonemta(client, headers, "zone-1")
        await synced_zone(client, headers)
        message = f"/api/v1/messages/{recipient_uuid(later, 'a@gmail.com')}"
        assert (await client.get(message, headers=headers)).json()["status"] == "deferred"
        for row in zone.find(later):
            row.queued = zone.now  # made due (a retry from ZoneMTA's own API)
            row.deferred = {**(row.deferred or {}), "count": 3}
        await synced_zone(client, headers)
        now_due = (await client.get(message, headers=headers)).json()
        assert (now_due["status"], now_due["num_attempts"]) == ("ready", 3), now_due
