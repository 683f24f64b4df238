"""Enforcement at each MTA by its own means: ZoneMTA's own suppression list (pushed, lifted on removal and
expiry), queued ZoneMTA messages cancelled through the operations path, KumoMTA's queued messages listed as held
and released by the removal."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import respx

from adapters import http as node_http
from adapters.zonemta.mapping import recipient_uuid
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.fake_zonemta import FakeZoneMta
from tests.support import load_fixture

KEY = base64.b64encode(b"z" * 32).decode()
URL = "/api/v1/suppressions"


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


def reception(recipient: str) -> dict[str, Any]:
    record: dict[str, Any] = copy.deepcopy(load_fixture("kumomta/log_reception.json"))
    record.update(recipient=recipient, queue="acme@gmail.com", id="feedfacefeedfacefeedfacefeedface")
    return record


def listed(zone: FakeZoneMta) -> list[str]:
    return sorted(e.get("address", "") for e in zone.suppressed)


@respx.mock
async def test_a_suppressed_address_reaches_zonemta_and_its_queued_messages_are_cancelled_or_held(
    services: Services,
) -> None:
    zone = FakeZoneMta()
    respx.route(host="zone-1.test").mock(side_effect=zone)
    ident = zone.add_message(["victim@gmail.com", "other@gmail.com"])
    async with api(services.settings, secret_key=KEY) as client:
        operator = await bearer(
            services, "fleet:manage", "queue:manage", "suppression:manage", "events:ingest", "email:read"
        )
        body = {"name": "zone-1", "kind": "zonemta", "base_url": "http://zone-1.test:12080"}
        assert (await client.post("/api/v1/nodes", json=body, headers=operator)).status_code == 201
        await client.post("/api/v1/nodes/sync", headers=operator)
        await client.post("/api/v1/events/ingest/kumomta", json=[reception("victim@gmail.com")], headers=operator)
        kumo_message = (
            await client.get("/api/v1/messages?recipient=victim@gmail.com&status=ready", headers=operator)
        ).json()["data"]
        kumo_ids = {m["id"] for m in kumo_message} - {str(recipient_uuid(ident, "victim@gmail.com"))}
        assert len(kumo_ids) == 1

        added = await client.post(URL, json={"email": "victim@gmail.com", "reason": "complaint"}, headers=operator)
        assert added.status_code == 201, added.text
        detail = added.json()
        assert listed(zone) == ["victim@gmail.com"] and detail["pushed_to"] == ["zone-1"]
        # the ZoneMTA row is gone, cancelled by an operation the audit shows with "suppression" as its actor
        assert [r.recipient for r in zone.rows] == ["other@gmail.com"]
        operation = (await client.get(f"/api/v1/operations/{detail['cancel_operation_id']}", headers=operator)).json()
        assert (operation["actor"], operation["request"]["operation"], operation["status"]) == (
            "suppression",
            "cancel",
            "done",
        )
        # KumoMTA cannot cancel one message: its queued message is listed as held
        assert set(detail["held_messages"]) == kumo_ids

        removed = await client.delete(f"{URL}/victim@gmail.com", headers=operator)
        assert removed.status_code == 200
        assert set(removed.json()["released_messages"]) == kumo_ids
        assert listed(zone) == []  # lifted at the node too
        actions = [e.action for e in await services.audit.recent(limit=20)]
        assert {"suppression.add", "suppression.remove", "suppression.push"} <= set(actions)


@respx.mock
async def test_an_expired_entry_is_lifted_at_zonemta_by_the_job_and_a_node_that_was_down_catches_up(
    services: Services,
) -> None:
    zone = FakeZoneMta()
    route = respx.route(host="zone-1.test")
    route.mock(side_effect=zone)
    async with api(services.settings, secret_key=KEY) as client:
        operator = await bearer(services, "fleet:manage", "suppression:manage")
        body = {"name": "zone-1", "kind": "zonemta", "base_url": "http://zone-1.test:12080"}
        await client.post("/api/v1/nodes", json=body, headers=operator)
        soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        await client.post(URL, json={"email": "brief@x.example", "expires_at": soon}, headers=operator)
        assert listed(zone) == ["brief@x.example"]

        route.mock(return_value=__import__("httpx").Response(503))  # the node is down while a new entry comes
        await client.post(URL, json={"email": "later@x.example"}, headers=operator)
        assert listed(zone) == ["brief@x.example"]
        route.mock(side_effect=zone)

        services.suppressions.now = lambda: datetime.now(UTC) + timedelta(minutes=6)
        await services.suppressions.run_pass()
        assert listed(zone) == ["later@x.example"]
        assert (await client.get(f"{URL}/brief@x.example", headers=operator)).status_code == 404
        await services.suppressions.run_pass()  # nothing more to do: nothing pushed twice
        assert listed(zone) == ["later@x.example"]


@respx.mock
async def test_zonemtas_list_keeps_an_address_while_any_spelling_of_it_is_suppressed_and_keeps_what_it_had(
    services: Services,
) -> None:
    zone = FakeZoneMta()
    respx.route(host="zone-1.test").mock(side_effect=zone)
    zone.suppress(address="theirs@x.example")  # put there by the node's operator, not by mtactl
    async with api(services.settings, secret_key=KEY) as client:
        operator = await bearer(services, "fleet:manage", "suppression:manage")
        body = {"name": "zone-1", "kind": "zonemta", "base_url": "http://zone-1.test:12080"}
        await client.post("/api/v1/nodes", json=body, headers=operator)
        for email in ("Bob@x.example", "bob@x.example", "theirs@x.example"):
            added = await client.post(URL, json={"email": email, "reason": "manual"}, headers=operator)
            assert added.status_code == 201, added.text
        assert listed(zone) == ["bob@x.example", "theirs@x.example"]  # ZoneMTA keys its list in lower case
        await client.delete(f"{URL}/Bob@x.example", headers=operator)
        await services.suppressions.run_pass()
        assert listed(zone) == ["bob@x.example", "theirs@x.example"]  # bob@x.example is still suppressed
        await client.delete(f"{URL}/bob@x.example", headers=operator)
        await client.delete(f"{URL}/theirs@x.example", headers=operator)
        await services.suppressions.run_pass()
    assert listed(zone) == ["theirs@x.example"]  # mtactl lifts what it put there, not the node's own entry
