"""POST /api/v1/events/ingest/kumomta end to end: durable 202s, dead letters, duplicates, the mirror, history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.kumomta.events import record_decoder
from adapters.kumomta.mapping import RECORD_STATUS, message_uuid
from controlplane.db.tables import DeadLetterRow, EventRow, MessageRow
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.support import kumomta_fixture_counts, kumomta_records, shared_fixture

INGEST = "/api/v1/events/ingest/kumomta"
EVENT_TYPES = [
    "Reception",
    "Delivery",
    "TransientFailure",
    "Bounce",
    "Expiration",
    "AdminBounce",
    "OOB",
    "Feedback",
    "Rejection",
]


async def count(services: Services, table: type) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def uuid_of(name: str) -> str:
    return str(message_uuid(record_decoder.decode(kumomta_records()[name])))


async def test_every_fixture_record_is_accepted_and_mirrored(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        for name, body in kumomta_records().items():
            response = await client.post(INGEST, content=body, headers=key)
            assert response.status_code == 202, (name, response.text)
            events = len(record_decoder.decode(body).recipients)  # one event per listed recipient
            assert response.json() == {"accepted": events, "duplicates": 0, "rejected": [], "spooled": 0}
        reader = await bearer(services, "email:read")
        expected = {
            "log_delivery": ("delivered", None),  # the Reception of the same message came first
            "log_transient_failure": ("deferred", "block"),
            "log_bounce": ("bounced", "hard"),
            "log_expiration": ("expired", "soft"),
            "log_admin_bounce": ("bounced", "unknown"),
            "log_oob": ("bounced", "hard"),
            "log_delayed": ("scheduled", None),
            "log_admin_rebind": ("ready", None),
            "log_deferred_injection_rebind": ("ready", None),
            "log_xfer_in": ("ready", None),
        }
        for name, (status, bounce) in expected.items():
            message = (await client.get(f"/api/v1/messages/{uuid_of(name)}", headers=reader)).json()
            assert (message["status"], message.get("bounce_classification")) == (status, bounce), name
        delivered = (await client.get(f"/api/v1/messages/{uuid_of('log_delivery')}", headers=reader)).json()
        assert delivered["tenant_id"] == "acme" and delivered["campaign_id"] == "spring-promo"
        assert delivered["pool_name"] == "pool-a" and delivered["smtp_response"]["code"] == 250
        assert delivered["delivered_at"] == "2026-11-23T08:30:00.412003Z"
        assert delivered["created_at"] == "2026-11-23T08:29:01.118230Z"
        history = (await client.get(f"/api/v1/messages/{uuid_of('log_delivery')}/events", headers=reader)).json()
        assert [e["type"] for e in history] == ["Reception", "Delivery"]
        assert history[1]["record"]["tls_cipher"] == "TLS_AES_256_GCM_SHA384"  # stored verbatim
    events = sum(len(record_decoder.decode(body).recipients) for body in kumomta_records().values())
    assert await count(services, EventRow) == events  # Feedback, Rejection and XferOut are kept as events


@pytest.mark.parametrize("name", sorted(kumomta_records()))
async def test_each_kind_of_record_kumod_writes_is_stored_and_mirrored_when_it_is_about_a_message(
    services: Services, name: str
) -> None:
    body = kumomta_records()[name]
    record = record_decoder.decode(body)
    async with api(services.settings) as client:
        response = await client.post(INGEST, content=body, headers=await bearer(services, "events:ingest"))
    assert response.status_code == 202, response.text
    recipients = len(record.recipients)
    assert response.json() == {"accepted": recipients, "duplicates": 0, "rejected": [], "spooled": 0}
    assert await count(services, EventRow) == recipients
    await services.projections.catch_up()
    assert await count(services, MessageRow) == (recipients if record.type in RECORD_STATUS else 0)
    assert await count(services, DeadLetterRow) == 0


async def test_a_record_listing_several_recipients_gives_each_its_message_and_history(services: Services) -> None:
    body = kumomta_records()["log_delivery_recipient_list"]
    parts = record_decoder.decode(body).per_recipient()
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        assert (await client.post(INGEST, content=body, headers=key)).json()["accepted"] == 3
        again = (await client.post(INGEST, content=body, headers=key)).json()
        assert (again["accepted"], again["duplicates"]) == (0, 3)
        reader = await bearer(services, "email:read")
        for part in parts:
            uid = message_uuid(part)
            message = (await client.get(f"/api/v1/messages/{uid}", headers=reader)).json()
            assert (message["recipient"], message["status"]) == (part.recipient, "delivered")
            history = (await client.get(f"/api/v1/messages/{uid}/events", headers=reader)).json()
            assert [e["record"]["recipient"] for e in history] == [json.loads(body)["recipient"]]  # verbatim


async def test_a_batch_with_bad_members_accepts_the_rest_and_keeps_the_bad_as_dead_letters(services: Services) -> None:
    batch = json.loads(shared_fixture("kumomta/webhook_batch.json"))
    body = json.dumps([batch[0], {"type": "Delivery"}, batch[1], "not a record", batch[2]])
    async with api(services.settings) as client:
        response = await client.post(INGEST, content=body, headers=await bearer(services, "events:ingest"))
        assert response.status_code == 202
        result = response.json()
        assert result["accepted"] == 3 and result["duplicates"] == 0
        assert [r["index"] for r in result["rejected"]] == [1, 3]
        assert "id" in result["rejected"][0]["error"]
        letters = (await client.get("/api/v1/events/dead-letters", headers=await bearer(services, "admin"))).json()
        assert [json.loads(d["payload"]) for d in letters["data"]][::-1] == [{"type": "Delivery"}, "not a record"]
        assert letters["data"][0]["api_key"] == "events:ingest"


async def test_a_body_that_is_not_json_is_answered_202_and_kept(services: Services) -> None:
    async with api(services.settings) as client:
        response = await client.post(INGEST, content=b"\x00garbage{", headers=await bearer(services, "events:ingest"))
    assert response.status_code == 202 and response.json()["rejected"][0]["index"] == 0
    async with services.sessions() as session:
        letter = (await session.scalars(select(DeadLetterRow))).one()
    assert "garbage" in letter.payload and "not JSON" in letter.error


async def test_the_same_record_twice_is_stored_once_and_counted_as_duplicate(services: Services) -> None:
    record = kumomta_records()["log_bounce"]
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        assert (await client.post(INGEST, content=record, headers=key)).json()["accepted"] == 1
        again = (await client.post(INGEST, content=record, headers=key)).json()
        assert (again["accepted"], again["duplicates"]) == (0, 1)
        both = b"[" + record + b"," + record + b"]"
        assert (await client.post(INGEST, content=both, headers=key)).json()["duplicates"] == 2
    assert await count(services, EventRow) == 1


async def test_a_batch_of_stored_and_new_records_stores_and_mirrors_the_new_ones(services: Services) -> None:
    # On Postgres the stored one makes the fast COPY fail; the group must then go in record by record's rules.
    records = kumomta_records()
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        assert (await client.post(INGEST, content=records["log_reception"], headers=key)).json()["accepted"] == 1
        mixed = b"[" + records["log_reception"] + b"," + records["log_bounce"] + b"]"
        answer = (await client.post(INGEST, content=mixed, headers=key)).json()
        assert (answer["accepted"], answer["duplicates"]) == (1, 1)
        reader = await bearer(services, "email:read")
        bounced = (await client.get(f"/api/v1/messages/{uuid_of('log_bounce')}", headers=reader)).json()
    assert await count(services, EventRow) == 2
    assert bounced["status"] == "bounced"


async def test_ingesting_needs_the_events_ingest_scope(services: Services) -> None:
    async with api(services.settings) as client:
        record = kumomta_records()["log_delivery"]
        assert (await client.post(INGEST, content=record)).status_code == 401
        assert (
            await client.post(INGEST, content=record, headers=await bearer(services, "email:read"))
        ).status_code == 403


async def test_a_tenant_bound_key_cannot_ingest_another_tenants_records(services: Services) -> None:
    globex = await bearer(services, "events:ingest", tenant="globex")
    acme = await bearer(services, "events:ingest", tenant="acme")
    async with api(services.settings) as client:
        refused = (await client.post(INGEST, content=kumomta_records()["log_delivery"], headers=globex)).json()
        assert refused["accepted"] == 0 and "tenant 'globex'" in refused["rejected"][0]["error"]
        allowed = (await client.post(INGEST, content=kumomta_records()["log_delivery"], headers=acme)).json()
        assert allowed["accepted"] == 1
    assert await count(services, DeadLetterRow) == 1


async def test_events_list_with_filters_and_cursor(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        await client.post(INGEST, content=b"[" + b",".join(kumomta_records().values()) + b"]", headers=key)
        reader = await bearer(services, "email:read")
        pages, cursor = [], None
        while True:
            params = {"limit": 4, "order": "asc", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/events", params=params, headers=reader)).json()
            pages.extend(page["data"])
            if not page["has_more"]:
                break
            cursor = page["cursor"]
        assert len(pages) == kumomta_fixture_counts()[0]
        assert [p["event_at"] for p in pages] == sorted(p["event_at"] for p in pages)
        gmail = (await client.get("/api/v1/events?domain=gmail.com", headers=reader)).json()["data"]
        assert {e["type"] for e in gmail} == {"Reception", "Delivery", "Bounce"}
        bounces = (await client.get("/api/v1/events?type=Bounce&type=OOB", headers=reader)).json()["data"]
        assert sorted(e["type"] for e in bounces) == ["Bounce", "OOB"]
        late = (await client.get("/api/v1/events?since=2026-11-23T09:00:00Z", headers=reader)).json()["data"]
        assert late == []
        # no offset: read as UTC, like the message filters (not a 500)
        naive = await client.get("/api/v1/events?since=2026-11-23T08:30:00&until=2026-11-23T09:00:00", headers=reader)
        assert naive.status_code == 200
        assert sorted(e["type"] for e in naive.json()["data"]) == sorted(set(EVENT_TYPES) - {"Reception"})
        bad = await client.get("/api/v1/events?cursor=zzz", headers=reader)
        assert bad.status_code == 400 and bad.json()["field"] == "cursor"


async def test_the_openapi_schema_documents_the_ingest_body(services: Services) -> None:
    async with api(services.settings) as client:
        spec = (await client.get("/schema/openapi.json")).json()
    operation = spec["paths"][INGEST]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0]["required"] == ["type", "id", "sender", "recipient", "queue", "timestamp"]
    assert "IngestResult" in json.dumps(operation["responses"])
    assert "/api/v1/events/dead-letters" in spec["paths"] and "/api/v1/messages/{message_id}/events" in spec["paths"]


async def test_spool_dir_setting_is_where_outage_files_go(services: Services, tmp_path: Path) -> None:
    assert services.ingest.spooled_files() == 0
