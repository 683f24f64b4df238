"""Issue 9: every fault of one record stays that record's. The reply is always 202 and its accounting exact
(accepted + duplicates + rejected = records sent), the records beside a bad one are stored, and what is stored
is what the model allows, on SQLite and on Postgres alike."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select

from adapters.kumomta import log_source
from adapters.kumomta.events import record_decoder
from adapters.kumomta.mapping import message_uuid
from controlplane.db.tables import DeadLetterRow, EventRow, MessageRow
from controlplane.events import service as ingest_service
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.support import kumomta_records

INGEST = "/api/v1/events/ingest/kumomta"
DEEP = "[" * 5000 + "]" * 5000


def record(kind: str = "log_delivery", **changes: Any) -> dict[str, Any]:
    """A fixture record made distinct (its own spool id) with the given fields changed."""
    base: dict[str, Any] = json.loads(kumomta_records()[kind])
    return base | {"id": uuid.uuid4().hex} | changes


class RawJson(str):
    """JSON text put into a batch as it is."""


def body(*records: Any) -> str:
    return "[" + ",".join(r if isinstance(r, RawJson) else json.dumps(r) for r in records) + "]"


async def count(services: Services, table: type) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def stored_ids(services: Services) -> set[str]:
    async with services.sessions() as session:
        return set((await session.scalars(select(EventRow.mta_message_id))).all())


async def post(services: Services, content: str | bytes, **overrides: Any) -> Any:
    async with api(services.settings, **overrides) as client:
        response = await client.post(INGEST, content=content, headers=await bearer(services, "events:ingest"))
    assert response.status_code == 202, response.text
    return response.json()


def check_accounting(answer: dict[str, Any], sent: int) -> None:
    assert answer["accepted"] + answer["duplicates"] + len(answer["rejected"]) == sent, answer


async def test_out_of_range_times_are_rejected_alone_and_the_rest_stored(services: Services) -> None:
    good = [record(), record("log_bounce")]
    bad = [
        record(timestamp=10**17),  # >= 1e17: beyond any datetime
        record("log_bounce", timestamp=253_402_300_800, event_time=None),  # year 10000
        record(event_time="9999-12-31T23:00:00-05:00"),  # in range as written, past year 9999 in UTC
        record(created=2**62, created_time=None),
        record(timestamp=2**62, event_time=None),
        record("log_feedback", timestamp=10**17, event_time=None),  # a type that does not touch the mirror
        record(type="SomethingNew", timestamp=-(10**17), event_time=None),
        record(timestamp=2**70),
    ]
    answer = await post(services, body(good[0], *bad, good[1]))
    check_accounting(answer, len(good) + len(bad))
    assert answer["accepted"] == 2
    assert [r["index"] for r in answer["rejected"]] == list(range(1, 1 + len(bad)))
    assert all(len(r["error"]) < 300 for r in answer["rejected"])
    assert await stored_ids(services) == {g["id"] for g in good}
    assert await count(services, DeadLetterRow) == len(bad)


async def test_nul_in_any_field_is_stored_escaped_on_both_backends(services: Services) -> None:
    nul = record(
        sender="bounces\x00@mail.acme.example",
        site="ip-1\x00",
        meta={"tenant": "acme", "note": "a\x00b", "key\x00": ["x\x00", {"y": "\x00"}]},
        headers={"Subject": "Hi\x00there"},
        response={"code": 250, "content": "OK\x00", "command": "."},
    )
    bounce = record("log_bounce", response={"code": 550, "content": "no\x00such user"})
    answer = await post(services, body(nul, bounce))
    assert answer == {"accepted": 2, "duplicates": 0, "rejected": [], "spooled": 0}
    reader = await bearer(services, "email:read")
    async with api(services.settings) as client:
        uid = message_uuid(record_decoder.decode(json.dumps(nul)))
        message = (await client.get(f"/api/v1/messages/{uid}", headers=reader)).json()
        history = (await client.get(f"/api/v1/messages/{uid}/events", headers=reader)).json()
        bounced_id = message_uuid(record_decoder.decode(json.dumps(bounce)))
        bounced = (await client.get(f"/api/v1/messages/{bounced_id}", headers=reader)).json()
    # Stored values carry the NUL as the six characters \u0000; the record itself is kept verbatim (a real NUL).
    assert message["sender"] == "bounces\\u0000@mail.acme.example"
    assert message["headers"] == {"Subject": "Hi\\u0000there"}
    assert message["metadata"]["meta"]["note"] == "a\\u0000b"
    assert message["metadata"]["meta"]["key\\u0000"] == ["x\\u0000", {"y": "\\u0000"}]
    assert message["smtp_response"]["message"] == "OK\\u0000"
    assert bounced["last_bounce_reason"] == "no\\u0000such user"
    assert history[0]["record"]["meta"]["note"] == "a\x00b"
    # In the event columns too: id, recipient, queue, type.
    columns = [record(id="x\x00y", recipient="j\x00d@gmail.com", queue="c:acme@gmail\x00.com"), record(type="New\x00")]
    assert (await post(services, body(*columns)))["accepted"] == 2
    async with services.sessions() as session:
        stored = (await session.execute(select(EventRow.mta_message_id, EventRow.recipient, EventRow.type))).all()
    assert ("x\\u0000y", "j\\u0000d@gmail.com", "Delivery") in [tuple(row) for row in stored]
    assert "New\\u0000" in [row.type for row in stored]


async def test_values_the_model_forbids_are_rejected_and_never_mirrored(services: Services) -> None:
    forbidden = [
        record(sender="not an address"),
        record(size=-7),
        record(num_attempts=-1),
        record(recipient="@gmail.com"),  # empty local part
        record(queue="gmail.com", meta={"campaign": "c" * 101}),  # campaign_id longer than the model allows
        record(headers={"Message-ID": "<" + "x" * 1000 + ">"}),  # message_id longer than the model allows
        record(response={"code": 250, "content": "OK", "enhanced_code": {"class": 2, "subject": 1234, "detail": 0}}),
        record(size=2**63),  # beyond the BIGINT column
        record(response={"code": 2**40, "content": ""}),  # beyond the INTEGER column
        record(recipient="a@" + "d" * 300),  # domain longer than the column
    ]
    valid = record()
    answer = await post(services, body(*forbidden, valid))
    check_accounting(answer, len(forbidden) + 1)
    assert answer["accepted"] == 1 and [r["index"] for r in answer["rejected"]] == list(range(len(forbidden)))
    assert "sender" in answer["rejected"][0]["error"] and "size" in answer["rejected"][1]["error"]
    await services.projections.catch_up()
    assert await count(services, MessageRow) == 1 and await stored_ids(services) == {valid["id"]}


async def test_deep_nesting_is_a_fault_of_that_record_only(services: Services) -> None:
    good = record()
    deep_meta = RawJson(json.dumps(record()).replace('"meta": {', f'"meta": {{"deep": {DEEP}, ', 1))
    deep_other = RawJson(json.dumps(record())[:-1] + f', "extra": {DEEP}}}')
    answer = await post(services, body(good, deep_meta, RawJson(DEEP), deep_other, record(meta={"a": [[[[1]]]]})))
    check_accounting(answer, 5)
    assert answer["accepted"] == 2 and [r["index"] for r in answer["rejected"]] == [1, 2, 3]
    assert "nested" in answer["rejected"][0]["error"]
    # A single record (what log_hooks:new_json posts) nested too deep, and a body that is one deep array.
    single = await post(services, deep_meta)
    assert (single["accepted"], [r["index"] for r in single["rejected"]]) == (0, [0])
    whole = await post(services, "[" + DEEP)
    assert whole["accepted"] == 0 and len(whole["rejected"]) == 1


async def test_a_record_the_database_refuses_is_answered_in_rejected_with_a_short_reason(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = record()
    writes = refuse_in_database(monkeypatch, poison["id"])
    batch = [record() for _ in range(999)]
    batch.insert(500, poison)
    answer = await post(services, body(*batch))
    check_accounting(answer, 1000)
    assert answer["accepted"] == 999 and answer["rejected"][0]["index"] == 500
    reason = answer["rejected"][0]["error"]
    assert reason.startswith("database refused it") and len(reason) < 300 and "SQL" not in reason
    # Bisection: about 2·log2(1000) transactions, not one per record.
    assert len(writes) <= 25
    async with services.sessions() as session:
        letter = (await session.scalars(select(DeadLetterRow))).one()
    assert letter.error == reason and json.loads(letter.payload)["id"] == poison["id"]
    assert await count(services, EventRow) == 999


def refuse_in_database(monkeypatch: pytest.MonkeyPatch, spool_id: str) -> list[int]:
    """Make the database refuse (as for a constraint) any write holding the record with this spool id."""
    real = ingest_service.insert_events
    writes: list[int] = []

    async def insert_events(session: Any, rows: Any, *, tx: int | None = None) -> set[bytes]:
        writes.append(len(rows))
        if any(spool_id in row for row in rows):
            raise sa_exc.IntegrityError("INSERT INTO events ... " + "x" * 5000, {}, Exception("check violated"))
        return await real(session, rows, tx=tx)

    monkeypatch.setattr(ingest_service, "insert_events", insert_events)
    return writes


async def test_a_real_refusal_on_postgres_isolates_the_record(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    if services.settings.is_sqlite:
        pytest.skip("SQLite stores NUL; this lets one through to Postgres, which refuses it")
    monkeypatch.setattr(log_source, "without_nul", lambda r: r)
    batch = [record() for _ in range(20)]
    batch[7]["type"] = "Delivery\x00"  # a column of the event itself
    answer = await post(services, body(*batch))
    check_accounting(answer, 20)
    assert answer["accepted"] == 19 and answer["rejected"][0]["index"] == 7
    assert "CharacterNotInRepertoire" in answer["rejected"][0]["error"]  # text refuses \\u0000
    assert len(answer["rejected"][0]["error"]) < 300


async def test_too_many_records_is_a_413_naming_the_limit(services: Services) -> None:
    async with api(services.settings, ingest_max_records_per_request=50) as client:
        key = await bearer(services, "events:ingest")
        response = await client.post(INGEST, content="[" + ",".join(["{}"] * 51) + "]", headers=key)
        assert response.status_code == 413
        error = response.json()
        assert error["error"] == "too_many_records" and set(error) == {"error", "message", "field"}
        assert "50" in error["message"] and "MTACTL_INGEST_MAX_RECORDS_PER_REQUEST" in error["message"]
        fits = await client.post(INGEST, content="[" + ",".join(["{}"] * 50) + "]", headers=key)
        assert fits.status_code == 202 and len(fits.json()["rejected"]) == 50
    assert await count(services, DeadLetterRow) == 50


async def test_dead_letters_kept_per_request_are_capped(services: Services) -> None:
    answer = await post(services, "[" + ",".join(["{}"] * 30) + "]", ingest_max_dead_letters_per_request=10)
    assert len(answer["rejected"]) == 30
    async with services.sessions() as session:
        letters = (await session.scalars(select(DeadLetterRow).order_by(DeadLetterRow.id))).all()
    assert len(letters) == 11 and "20 more records" in letters[-1].error


# Hypothesis: batches mixing valid records (some with NUL and odd text in what is stored) and hostile ones.
def _valid(note: str, where: str) -> dict[str, Any]:
    if where == "meta":
        return record(meta={"tenant": "acme", note: note, "n": [note, {"deeper": note}]})
    if where == "headers":
        return record(headers={"Subject": note, "X-Note": note})
    return record(**{where: note})


def _valid_anyway(r: dict[str, Any]) -> bool:
    return (
        r["queue"] == "x"
        or r["response"] is None
        or any(r[name] == 5 for name in ("timestamp", "size", "num_attempts"))
        or any(r[name] is None or r[name] == {"a": 1} for name in ("meta", "headers"))
    )


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.just("\x00"), max_size=20)
valid_records = st.builds(_valid, _text, st.sampled_from(["meta", "headers", "site"]))
_out_of_range = st.integers(253_402_300_800, 2**80) | st.integers(-(2**80), -62_135_596_801)
hostile_records = st.one_of(
    st.builds(lambda t: record(timestamp=t, event_time=None), _out_of_range),
    st.builds(lambda t: record(created=t, created_time=None), _out_of_range),
    st.builds(
        lambda t, k: record(type=k, timestamp=t, event_time=None), _out_of_range, st.sampled_from(["Feedback", "New"])
    ),
    st.builds(
        lambda d: RawJson(json.dumps(record())[:-1] + ', "x": ' + "[" * d + "]" * d + "}"), st.integers(65, 6000)
    ),
    st.builds(lambda d: RawJson("[" * d + "]" * d), st.integers(65, 6000)),
    st.builds(
        lambda field, value: record(**{field: value}),
        st.sampled_from(["sender", "timestamp", "queue", "meta", "headers", "size", "num_attempts", "response"]),
        st.sampled_from([5, "x", [1], None, True, {"a": 1}]),
    ).filter(lambda r: not _valid_anyway(r)),
    st.builds(lambda n: record(size=n), st.integers(2**63, 2**90) | st.integers(-(2**90), -1)),
    st.builds(lambda n: record(num_attempts=n), st.integers(2**31, 2**70)),
    st.builds(lambda n: record(response={"code": n, "content": ""}), st.integers(2**31, 2**70)),
    st.builds(lambda s: record(sender=s), st.sampled_from(["not an address", "a@b@c", "<x@y>", " @x"])),
    st.sampled_from([1, "x", None, [], {}, {"type": "Delivery"}]),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(
        st.one_of(valid_records.map(lambda r: (True, r)), hostile_records.map(lambda r: (False, r))),
        min_size=1,
        max_size=12,
    )
)
async def test_generated_hostile_batches_never_fail_and_account_for_every_record(
    services: Services, plan: list[tuple[bool, Any]]
) -> None:
    content = body(*[r for _, r in plan])
    async with api(services.settings) as client:
        response = await client.post(INGEST, content=content, headers=await bearer(services, "events:ingest"))
    assert response.status_code == 202, response.text
    answer = response.json()
    check_accounting(answer, len(plan))
    assert [r["index"] for r in answer["rejected"]] == [i for i, (ok, _) in enumerate(plan) if not ok]
    stored = await stored_ids(services)
    assert {r["id"] for ok, r in plan if ok} <= stored


async def test_a_million_empty_records_are_refused_whole_without_a_dead_letter(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "events:ingest")
        response = await client.post(INGEST, content="[" + ",".join(["{}"] * 1_000_000) + "]", headers=key)
    assert response.status_code == 413 and "10000" in response.json()["message"]
    assert await count(services, DeadLetterRow) == 0
