"""POST /api/v1/events/ingest/zonemta end to end: ZoneMTA's log entries and core/http-bounce's form, stored,
deduplicated and mirrored, on SQLite and Postgres."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.zonemta.log_source import ZONEMTA, parse
from adapters.zonemta.mapping import message_uuid
from controlplane.db.tables import DeadLetterRow, EventRollupRow, EventRow, MessageRow
from controlplane.events.service import _from_spool, _to_spool, decode_body
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.support import zonemta_batch, zonemta_entries, zonemta_http_bounce

INGEST = "/api/v1/events/ingest/zonemta"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
AT = 1_795_414_203_532  # ms: when the first hook fired

# fixture -> the status of each recipient's message once it is ingested alone (None: an event only)
ALONE = {
    "log_entry_queued": "ready",
    "log_entry_accepted": "delivered",
    "log_entry_deferred": "deferred",
    "log_entry_rejected": "bounced",
    "log_entry_drop_suppressed": "cancelled",
    "log_entry_deleted": None,
    "log_entry_queue_bounce": None,
}


async def count(services: Services, table: type) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def uuids(raw: bytes) -> list[str]:
    return [str(message_uuid(part)) for part in parse(raw)[1]]


def stamped(name: str, at: int, **changes: Any) -> dict[str, Any]:
    """A fixture entry as mtactl's log:entry plugin posts it: with ``_mtactl``."""
    return json.loads(zonemta_entries()[name]) | changes | {"_mtactl": {"node": "mta1", "at": at}}


@pytest.mark.parametrize("name", sorted(ALONE))
async def test_each_fixture_alone_is_accepted_and_mirrored_as_the_table_says(services: Services, name: str) -> None:
    body = zonemta_entries()[name]
    events = len(ZONEMTA.decode(body))
    async with api(services.settings) as client:
        response = await client.post(INGEST, content=body, headers=await bearer(services, "events:ingest"))
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": events, "duplicates": 0, "rejected": [], "spooled": 0}
        reader = await bearer(services, "email:read")
        for uid in uuids(body):
            answer = await client.get(f"/api/v1/messages/{uid}", headers=reader)
            if ALONE[name] is None:
                assert answer.status_code == 404
            else:
                assert answer.json()["status"] == ALONE[name], name
    assert await count(services, EventRow) == events
    assert await count(services, MessageRow) == (0 if ALONE[name] is None else events)
    assert await count(services, DeadLetterRow) == 0


async def test_every_fixture_in_one_batch_is_accepted_and_mirrored(services: Services) -> None:
    # What the contract check posts: every log_entry_*.json, as one array.
    body = zonemta_batch()
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        response = await client.post(INGEST, content=body, headers=key)
        assert response.status_code == 202, response.text
        events = sum(len(ZONEMTA.decode(raw)) for raw in zonemta_entries().values())
        assert response.json() == {"accepted": events, "duplicates": 0, "rejected": [], "spooled": 0}
        again = (await client.post(INGEST, content=body, headers=key)).json()
        assert again == {"accepted": 0, "duplicates": events, "rejected": [], "spooled": 0}
        reader = await bearer(services, "email:read")
        entries = zonemta_entries()
        dave, carol = uuids(entries["log_entry_accepted"])[0], uuids(entries["log_entry_deferred"])[0]
        delivered = (await client.get(f"/api/v1/messages/{dave}", headers=reader)).json()
        assert delivered["status"] == "delivered" and delivered["pool_name"] == "default"
        reply = delivered["smtp_response"]
        assert (reply["code"], reply["enhanced_code"], reply["message"]) == (250, "2.0.0", "Ok: queued as 4XyZ1k2L3m")
        assert when(reply["timestamp"]) == datetime(2023, 10, 7, 4, 51, 2, 554000, tzinfo=UTC)  # the queue id's
        assert delivered["headers"]["Subject"] == "November update" and delivered["size_bytes"] == 5790
        assert delivered["metadata"] == {
            "mta_message_id": "18b0879811a00009a2",
            "zonemta_seq": "002",
            "zone": "default",
        }
        assert delivered["queue_name"] == delivered["domain"] == "example.com"
        # Without `_mtactl.at` every entry is placed at its queue id's time: between in-queue states of one instant
        # the merge's tie rule decides (ready over deferred), the same on both backends and in any order.
        deferred = (await client.get(f"/api/v1/messages/{carol}", headers=reader)).json()
        assert (deferred["status"], deferred["num_attempts"]) == ("ready", 5)
        assert deferred.get("next_attempt_at") is None and deferred["bounce_classification"] == "soft"
        bounced = await client.get(f"/api/v1/messages/{uuids(entries['log_entry_rejected'])[0]}", headers=reader)
        assert bounced.json()["status"] == "bounced" and bounced.json()["bounce_classification"] == "hard"
        history = (await client.get(f"/api/v1/messages/{dave}/events", headers=reader)).json()
        assert sorted(e["type"] for e in history) == ["ACCEPTED", "QUEUED"]
        accepted = next(e for e in history if e["type"] == "ACCEPTED")
        assert accepted["record"] == json.loads(entries["log_entry_accepted"])  # stored verbatim
        assert accepted["source"] == "zonemta" and accepted["mta_message_id"] == "18b0879811a00009a2"
        listed = (await client.get("/api/v1/events?type=DELETED&type=QUEUE_BOUNCE", headers=reader)).json()
        assert sorted(e["type"] for e in listed["data"]) == ["DELETED", "QUEUE_BOUNCE"]
    assert await count(services, MessageRow) == 4  # carol, dave, nobody, complainer


async def test_the_http_bounce_form_is_accepted_and_mirrored_and_stored_as_its_fields(services: Services) -> None:
    form, view = zonemta_http_bounce()
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        response = await client.post(INGEST, content=form, headers=key | FORM)
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "spooled": 0}
        assert (await client.post(INGEST, content=form, headers=key | FORM)).json()["duplicates"] == 1
        rejected = (await client.post(INGEST, content=zonemta_entries()["log_entry_rejected"], headers=key)).json()
        assert rejected["accepted"] == 1  # ZoneMTA's REJECTED entry of the same bounce: its own event
        reader = await bearer(services, "email:read")
        uid = uuids(zonemta_entries()["log_entry_rejected"])[0]
        message = (await client.get(f"/api/v1/messages/{uid}", headers=reader)).json()
        assert (message["status"], message["bounce_classification"]) == ("bounced", "hard")
        assert message["last_bounce_reason"] == view["response"]
        history = (await client.get(f"/api/v1/messages/{uid}/events", headers=reader)).json()
        assert [e["type"] for e in history] == ["REJECTED", "HTTP_BOUNCE"]  # the queue id's time, then `time`
        assert history[1]["record"] == view | {"_mtactl": {"form": "core/http-bounce"}}
        assert when(history[1]["event_at"]) == datetime(2026, 11, 23, 6, 56, 40, 123000, tzinfo=UTC)


async def test_one_delivery_s_entries_posted_in_reverse_end_delivered(services: Services) -> None:
    entries = [
        stamped("log_entry_queued", AT),
        stamped("log_entry_deferred", AT + 60_000, defcount=1),
        stamped("log_entry_deferred", AT + 420_000, defcount=2),
        stamped("log_entry_accepted", AT + 900_000, to="carol@yahoo.example", seq="001"),
    ]
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        for entry in reversed(entries):  # one request each, the last first
            answer = (await client.post(INGEST, content=json.dumps(entry), headers=key)).json()
            assert answer["rejected"] == [] and answer["accepted"] >= 1
        uid = uuids(json.dumps(entries[1]).encode())[0]
        message = (await client.get(f"/api/v1/messages/{uid}", headers=await bearer(services, "email:read"))).json()
    assert message["status"] == "delivered" and message["num_attempts"] == 2
    assert when(message["delivered_at"]) == datetime(2026, 11, 23, 6, 25, 3, 532000, tzinfo=UTC)
    assert message.get("next_attempt_at") is None
    assert message["recipient"] == "carol@yahoo.example" and message["sender"] == "news@sender.example"


async def test_a_deferral_in_flight_shows_its_count_and_next_attempt(services: Services) -> None:
    entries = [stamped("log_entry_queued", AT), stamped("log_entry_deferred", AT + 60_000)]
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        assert (await client.post(INGEST, content=json.dumps(entries[::-1]), headers=key)).json()["accepted"] == 3
        uid = uuids(json.dumps(entries[1]).encode())[0]
        message = (await client.get(f"/api/v1/messages/{uid}", headers=await bearer(services, "email:read"))).json()
    assert (message["status"], message["num_attempts"]) == ("deferred", 5)
    assert when(message["next_attempt_at"]) == datetime(2026, 11, 23, 7, 21, 12, 733000, tzinfo=UTC)
    assert message["smtp_response"]["code"] == 421 and message["bounce_classification"] == "soft"


async def test_the_node_and_zone_are_counted_in_the_rollups(services: Services) -> None:
    async with api(services.settings) as client:
        body = json.dumps([stamped("log_entry_queued", AT), stamped("log_entry_accepted", AT + 1000)])
        assert (await client.post(INGEST, content=body, headers=await bearer(services, "events:ingest"))).json()[
            "accepted"
        ] == 3
        await client.get("/api/v1/health")  # lets the client bring the projections up to date
    async with services.sessions() as session:
        r = EventRollupRow
        rows = (await session.execute(select(r.dimension, r.value, r.metric))).all()
    assert ("node", "mta1", "QUEUED") in rows and ("node", "mta1", "ACCEPTED") in rows
    assert ("egress_pool", "default", "ACCEPTED") in rows and ("source", "zonemta", "QUEUED") in rows


async def test_bad_entries_are_rejected_naming_the_field_and_the_rest_accepted(services: Services) -> None:
    entries = zonemta_entries()
    no_id = json.loads(entries["log_entry_accepted"])
    del no_id["id"]
    bad_recipient = json.loads(entries["log_entry_rejected"]) | {"to": "not an address"}
    body = (
        "["
        + ",".join(
            [
                entries["log_entry_accepted"].decode(),
                json.dumps(no_id),
                json.dumps(bad_recipient),
                '"not an entry"',
                "42",
                entries["log_entry_deleted"].decode(),
            ]
        )
        + "]"
    )
    async with api(services.settings) as client:
        response = await client.post(INGEST, content=body, headers=await bearer(services, "events:ingest"))
        assert response.status_code == 202
        answer = response.json()
        assert answer["accepted"] == 2 and answer["duplicates"] == 0
        errors = {r["index"]: r["error"] for r in answer["rejected"]}
        assert sorted(errors) == [1, 2, 3, 4]
        assert "`id`" in errors[1] and "`to`" in errors[2]
        assert "object" in errors[3] and "object" in errors[4]
        letters = (await client.get("/api/v1/events/dead-letters", headers=await bearer(services, "admin"))).json()
        assert {d["source"] for d in letters["data"]} == {"zonemta"} and len(letters["data"]) == 4


async def test_a_form_that_cannot_be_read_is_a_dead_letter_and_a_form_missing_fields_is_rejected(
    services: Services,
) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        unreadable = (await client.post(INGEST, content=b"id=%ff%fe", headers=key | FORM)).json()
        assert unreadable["rejected"][0]["error"].startswith("body is not a form")
        partial = await client.post(INGEST, content=b"id=18b0879811a00009b7&to=a%40b.example", headers=key | FORM)
        assert "`time`" in partial.json()["rejected"][0]["error"]
    assert await count(services, DeadLetterRow) == 2 and await count(services, EventRow) == 0


def basic(password: str, user: str = "zonemta") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_http_basic_with_the_key_as_password_is_the_key_on_the_ingest_routes_only(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    # nodemailer's fetch (core/http-bounce) sends the URL's user:password as Basic, and no other header.
    ingest = await services.keys.create(name="zonemta-bounces", scopes=["events:ingest"])
    form, _ = zonemta_http_bounce()
    caplog.set_level(logging.DEBUG)
    async with api(services.settings) as client:
        response = await client.post(INGEST, content=form, headers=basic(ingest.key) | FORM)
        assert response.status_code == 202 and response.json()["accepted"] == 1
        anyone = await client.post(INGEST, content=zonemta_batch(), headers=basic(ingest.key, user=""))
        assert anyone.status_code == 202
        kumomta = await client.post("/api/v1/events/ingest/kumomta", content=b"[]", headers=basic(ingest.key))
        assert kumomta.status_code == 202  # every ingest route
        for refused in (basic("mq_live_not-a-key"), basic(""), {"Authorization": "Basic !!!"}):
            answer = await client.post(INGEST, content=form, headers=refused | FORM)
            assert answer.status_code == 401 and answer.json()["field"] == "Authorization"
        reader = await services.keys.create(name="reader", scopes=["email:read"])
        assert (await client.get("/api/v1/messages", headers=basic(reader.key))).status_code == 401
        wrong_scope = await client.post(INGEST, content=form, headers=basic(reader.key) | FORM)
        assert wrong_scope.status_code == 403
    assert ingest.key not in caplog.text and reader.key not in caplog.text


async def test_the_openapi_schema_documents_both_bodies_and_both_credentials(services: Services) -> None:
    async with api(services.settings) as client:
        spec = (await client.get("/schema/openapi.json")).json()
    operation = spec["paths"][INGEST]["post"]
    content = operation["requestBody"]["content"]
    entry = content["application/json"]["schema"]["oneOf"][0]
    assert entry["title"] == "ZoneLogEntry" and entry["required"] == ["id", "action"]
    assert entry["additionalProperties"] is True and "_mtactl" in entry["properties"]
    form = content["application/x-www-form-urlencoded"]["schema"]
    assert form["title"] == "ZoneHttpBounce" and form["required"] == ["id", "to", "time"]
    assert operation["operationId"] == "IngestZoneMTALogRecords"
    assert operation["security"] == [{"apiKey": []}, {"ingestBasic": []}]
    assert spec["components"]["securitySchemes"]["ingestBasic"]["scheme"] == "basic"
    kumomta = spec["paths"]["/api/v1/events/ingest/kumomta"]["post"]["requestBody"]["content"]
    assert set(kumomta) == {"application/json"}
    types = spec["components"]["schemas"]["RecordType"]["enum"]
    assert {"Delivery", "ACCEPTED", "DEFERRED", "HTTP_BOUNCE"} <= set(types)


async def test_nul_and_deep_nesting_are_faults_of_their_entry_only_on_both_backends(services: Services) -> None:
    entries = zonemta_entries()
    nul = json.loads(entries["log_entry_rejected"]) | {"response": "550 5.1.1 no\x00body", "zone": "z\x00"}
    deep = entries["log_entry_deleted"].decode()[:-1] + ', "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    body = "[" + ",".join([json.dumps(nul), deep, entries["log_entry_accepted"].decode()]) + "]"
    async with api(services.settings) as client:
        answer = (await client.post(INGEST, content=body, headers=await bearer(services, "events:ingest"))).json()
        assert answer["accepted"] == 2 and [r["index"] for r in answer["rejected"]] == [1]
        assert "nested" in answer["rejected"][0]["error"]
        uid = uuids(json.dumps(nul).encode())[0]
        reader = await bearer(services, "email:read")
        message = (await client.get(f"/api/v1/messages/{uid}", headers=reader)).json()
        history = (await client.get(f"/api/v1/messages/{uid}/events", headers=reader)).json()
    assert message["last_bounce_reason"] == "550 5.1.1 no\\u0000body" and message["pool_name"] == "z\\u0000"
    assert history[0]["record"]["response"] == "550 5.1.1 no\x00body"  # the record itself verbatim


def test_spooled_entries_and_forms_are_replayed_as_they_were_acknowledged() -> None:
    form, _ = zonemta_http_bounce()
    body = ZONEMTA.split(form, "application/x-www-form-urlencoded")[0]
    batch = zonemta_batch()
    records = []
    for raw in (body, batch):
        decoded, dead, rejected = decode_body(raw, source=ZONEMTA, api_key="k", tenant=None)
        assert rejected == [] and dead == []
        records += decoded
    replayed, dead = _from_spool([_to_spool(records, [])])
    assert dead == [] and [r.event for r in replayed] == [r.event for r in records]
