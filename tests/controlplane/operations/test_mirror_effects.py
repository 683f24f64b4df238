"""The mirror tells the truth about operations: a purge empties it, a bounce reads as bounced and a cancel as
cancelled, and messages show their queue suspended while a node holds a suspension for it."""

from __future__ import annotations

from typing import Any

import pytest
import respx

from adapters import http as node_http
from controlplane.db.messages import insert_new
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.fake_kumod import FakeKumod, register
from tests.support import load_fixture, make_message


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


async def statuses(client: Any, headers: dict[str, str], **query: str) -> list[tuple[str, str]]:
    page = (await client.get("/api/v1/messages", params=query, headers=headers)).json()
    return sorted((m["status"], m["queue_state"]) for m in page["data"])


async def mirror_two_gmail_messages_and_one_yahoo(services: Services) -> None:
    async with services.sessions.begin() as session:
        await insert_new(session, [make_message(domain="gmail.com", tenant_id="acme") for _ in range(2)])
        await insert_new(session, [make_message(domain="yahoo.com", tenant_id="acme")])


@respx.mock
async def test_a_purge_of_every_node_marks_the_purged_messages_cancelled(services: Services) -> None:
    respx.route(host="kumo-1.test").mock(side_effect=FakeKumod({"acme@gmail.com": 2}))
    await mirror_two_gmail_messages_and_one_yahoo(services)
    async with api(services.settings) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage", "email:read")
        await register(client, headers, "kumo-1")
        body = {"operation": "purge", "reason": "bad list", "domain": "gmail.com", "tenant": "acme"}
        partial = await client.post("/api/v1/operations", json=body | {"nodes": ["kumo-1"]}, headers=headers)
        assert partial.json()["status"] == "done"
        # Named nodes only: the mirror cannot tell which of its messages were on them, so it is left as it is.
        assert await statuses(client, headers, domain="gmail.com") == [("ready", "active")] * 2
        everywhere = await client.post("/api/v1/operations", json=body, headers=headers)
        assert everywhere.json()["status"] == "done"
        assert await statuses(client, headers, domain="gmail.com") == [("cancelled", "active")] * 2
        assert await statuses(client, headers, domain="yahoo.com") == [("ready", "active")]
        [purged, _] = (await client.get("/api/v1/messages?domain=gmail.com", headers=headers)).json()["data"]
        assert purged["last_bounce_reason"].startswith(f"purged by operation {everywhere.json()['id']}")


@respx.mock
async def test_admin_bounce_records_read_as_bounced_for_a_bounce_and_cancelled_for_a_cancel(services: Services) -> None:
    kumod = FakeKumod({"acme@gmail.com": 1, "acme@yahoo.com": 1})
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage", "email:read", "events:ingest")
        await register(client, headers, "kumo-1")
        records = []
        for operation, domain in (("bounce", "gmail.com"), ("cancel", "yahoo.com")):
            body = {"operation": operation, "reason": "cleanup", "domain": domain, "tenant": "acme"}
            assert (await client.post("/api/v1/operations", json=body, headers=headers)).json()["status"] == "done"
            sent = kumod.posted("/api/admin/bounce/v1")[-1]["reason"]
            # kumod then logs an AdminBounce per message, with the reason it was sent (admin_bounce_v1.rs)
            record = load_fixture("kumomta/log_admin_bounce.json")
            record.update(id=f"{domain[:4]}" * 8, recipient=f"someone@{domain}", queue=f"acme@{domain}")
            record["response"]["content"] = f"Administrator bounced with reason: {sent}"
            records.append(record)
        ingested = await client.post("/api/v1/events/ingest/kumomta", json=records, headers=headers)
        assert ingested.json()["accepted"] == 2
        assert [s for s, _ in await statuses(client, headers, domain="gmail.com")] == ["bounced"]
        assert [s for s, _ in await statuses(client, headers, domain="yahoo.com")] == ["cancelled"]


@respx.mock
async def test_queued_messages_show_their_queue_suspended_while_a_node_holds_a_suspension(services: Services) -> None:
    kumod = FakeKumod({"acme@gmail.com": 2, "acme@yahoo.com": 1})
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    await mirror_two_gmail_messages_and_one_yahoo(services)
    async with api(services.settings) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage", "email:read")
        await register(client, headers, "kumo-1")
        await client.post("/api/v1/nodes/sync", headers=headers)
        body = {"operation": "suspend", "reason": "block", "domain": "gmail.com", "tenant": "acme"}
        assert (await client.post("/api/v1/operations", json=body, headers=headers)).json()["status"] == "done"
        assert await statuses(client, headers, queue_state="suspended") == [("ready", "suspended")] * 2
        assert await statuses(client, headers, domain="yahoo.com") == [("ready", "active")]
        kumod.suspensions.clear()  # lifted on the node by someone else (kcli): the next sync says so
        await client.post("/api/v1/nodes/sync", headers=headers)
        assert await statuses(client, headers, queue_state="suspended") == []
