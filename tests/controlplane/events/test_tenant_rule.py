"""Issue 9, item 9: records from a tenant-bound key may touch only messages of its tenant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.kumomta.events import record_decoder
from adapters.kumomta.log_source import KUMOMTA
from adapters.kumomta.mapping import message_uuid, observe
from controlplane.db.mirror import apply_observations
from controlplane.db.tables import DeadLetterRow, EventRow
from controlplane.events import service as ingest_service
from controlplane.events.service import TENANT_REFUSAL, IngestPipeline, _to_spool, decode_body, write_group
from controlplane.events.spool import Spool
from controlplane.projections.mirror import TENANT_DECLINED
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.controlplane.events.test_hostile_records import INGEST, record


def forged(original: dict[str, Any], tenant: str) -> dict[str, Any]:
    """A record about the same message (spool id and recipient), claiming it for ``tenant``."""
    return record(
        "log_delivery",
        id=original["id"],
        recipient=original["recipient"],
        queue=f"x:{tenant}@gmail.com",
        meta={"tenant": tenant},
    )


async def count(services: Services, table: type) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_a_tenant_key_cannot_move_or_read_another_tenants_message(services: Services) -> None:
    acme_message = record("log_reception")  # queue spring-promo:acme@gmail.com
    uid = message_uuid(record_decoder.decode(json.dumps(acme_message)))
    acme_key = await bearer(services, "events:ingest", tenant="acme")
    globex_key = await bearer(services, "events:ingest", tenant="globex")
    acme_reader = await bearer(services, "email:read", tenant="acme")
    globex_reader = await bearer(services, "email:read", tenant="globex")
    async with api(services.settings) as client:
        assert (await client.post(INGEST, json=acme_message, headers=acme_key)).json()["accepted"] == 1
        own = record("log_delivery", queue="x:globex@gmail.com", meta={"tenant": "globex"})
        answer = (await client.post(INGEST, json=[forged(acme_message, "globex"), own], headers=globex_key)).json()
        assert answer["accepted"] == 1 and answer["duplicates"] == 0
        assert answer["rejected"] == [{"index": 0, "error": TENANT_REFUSAL}]
        message = await client.get(f"/api/v1/messages/{uid}", headers=acme_reader)
        assert message.status_code == 200
        assert (message.json()["tenant_id"], message.json()["status"]) == ("acme", "ready")
        assert (await client.get(f"/api/v1/messages/{uid}", headers=globex_reader)).status_code == 404
        assert (await client.get(f"/api/v1/messages/{uid}/events", headers=globex_reader)).status_code == 404
        history = (await client.get(f"/api/v1/messages/{uid}/events", headers=acme_reader)).json()
        assert [e["type"] for e in history] == ["Reception"]
    assert await count(services, EventRow) == 2 and await count(services, DeadLetterRow) == 1


async def test_an_untenanted_message_is_not_a_tenant_keys_either(services: Services) -> None:
    plain = record("log_reception", queue="gmail.com", meta={})
    async with api(services.settings) as client:
        assert (await client.post(INGEST, json=plain, headers=await bearer(services, "events:ingest"))).json()[
            "accepted"
        ] == 1
        key = await bearer(services, "events:ingest", tenant="globex")
        answer = (await client.post(INGEST, json=forged(plain, "globex"), headers=key)).json()
    assert answer["accepted"] == 0 and answer["rejected"][0]["error"] == TENANT_REFUSAL


async def test_two_tenants_claiming_one_new_message_in_one_group_the_first_wins(services: Services) -> None:
    first = record("log_reception", queue="x:acme@gmail.com", meta={"tenant": "acme"})
    acme, _, _ = decode_body(json.dumps(first).encode(), source=KUMOMTA, api_key="a", tenant="acme")
    globex, _, _ = decode_body(
        json.dumps(forged(first, "globex")).encode(), source=KUMOMTA, api_key="g", tenant="globex"
    )
    async with services.sessions.begin() as session:
        result = await write_group(session, acme + globex, [])
    assert [(r.api_key, why) for r, why in result.refused] == [("g", TENANT_REFUSAL)]
    assert len(result.inserted) == 1


async def test_the_guarded_upsert_refuses_a_message_stored_meanwhile_for_another_tenant(
    services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    acme_message = record("log_reception")
    async with services.sessions.begin() as session:
        await write_group(
            session, decode_body(json.dumps(acme_message).encode(), source=KUMOMTA, api_key=None, tenant=None)[0], []
        )
    await services.projections.catch_up()
    claim = observe(record_decoder.decode(json.dumps(forged(acme_message, "globex"))))
    assert claim is not None
    async with services.sessions.begin() as session:
        assert await apply_observations(session, [claim], same_tenant_only=True) == {claim.id}

    # As if another writer had stored the message after the check: the record is in the log, acknowledged, but
    # the mirror projection does not apply a tenant-bound key's event to another tenant's message.
    async def nothing_stored(_session: Any, _records: Any) -> list[Any]:
        return []

    monkeypatch.setattr(ingest_service, "_other_tenants_messages", nothing_stored)
    pipeline = IngestPipeline(services.sessions, tmp_path / "spool", 1000)
    await pipeline.start()
    records, dead, _ = decode_body(
        json.dumps([forged(acme_message, "globex"), record(queue="x:globex@gmail.com", meta={})]).encode(),
        source=KUMOMTA,
        api_key="g",
        tenant="globex",
    )
    outcome = await pipeline.submit(records, dead)
    await pipeline.stop()
    assert (outcome.accepted, outcome.rejected) == (2, ())
    await services.projections.catch_up()
    uid = message_uuid(record_decoder.decode(json.dumps(acme_message)))
    message = await services.queues.get_message(uid)
    assert message.tenant_id == "acme" and message.status.value == "ready"
    async with services.sessions() as session:
        posted = await session.scalar(
            select(EventRow.posted_by_tenant).where(
                EventRow.mta_message_id == acme_message["id"], EventRow.posted_by_tenant.is_not(None)
            )
        )
    assert posted == "globex"
    globex_own = message_uuid(record_decoder.decode(records[1].payload))
    assert (await services.queues.get_message(globex_own)).tenant_id == "globex"
    async with services.sessions() as session:  # the declined event is where an operator looks for what did not go in
        declined = (await session.scalars(select(DeadLetterRow).where(DeadLetterRow.error == TENANT_DECLINED))).all()
    assert [json.loads(letter.payload)["id"] for letter in declined] == [acme_message["id"]]


async def test_spooled_records_keep_the_tenant_rule_when_replayed(services: Services, tmp_path: Path) -> None:
    acme_message = record("log_reception")
    async with services.sessions.begin() as session:
        await write_group(
            session, decode_body(json.dumps(acme_message).encode(), source=KUMOMTA, api_key=None, tenant=None)[0], []
        )
    records, dead, _ = decode_body(
        json.dumps([forged(acme_message, "globex")]).encode(), source=KUMOMTA, api_key="g", tenant="globex"
    )
    spool = Spool(tmp_path / "spool")
    spool.write(_to_spool(records, dead))
    await IngestPipeline(services.sessions, spool.directory, 1000).replay_pending()
    assert spool.pending() == []
    await services.projections.catch_up()
    uid = message_uuid(record_decoder.decode(json.dumps(acme_message)))
    assert (await services.queues.get_message(uid)).tenant_id == "acme"
    async with services.sessions() as session:
        assert (await session.scalars(select(DeadLetterRow.error))).all() == [TENANT_REFUSAL]
