"""The shapes of ZoneMTA's log entries and core/http-bounce body that mtactl reads (fixtures/zonemta/README.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from adapters.zonemta.events import (
    HTTP_BOUNCE,
    HTTP_BOUNCE_FORM,
    Action,
    LogEntry,
    entry_decoder,
    form_record,
    queue_id_time,
    recipients,
)
from adapters.zonemta.log_source import ZONEMTA, parse
from tests.support import zonemta_batch, zonemta_entries, zonemta_http_bounce

FORM = "application/x-www-form-urlencoded"
AT = 1_795_414_203_532  # ms: when a hook fired


def entry(name: str, **changes: Any) -> bytes:
    return json.dumps(json.loads(zonemta_entries()[name]) | changes).encode()


def seq_index_id(ms: int, counter: int = 0, suffix: str = "09a2") -> str:
    """A queue id as @zone-eu/seq-index's get() makes it: hex(ms * 0x1000 + counter) and a 4-hex-digit suffix."""
    return format(ms * 0x1000 + counter, "x") + suffix


@pytest.mark.parametrize("name", sorted(zonemta_entries()))
def test_every_fixture_decodes_and_survives_a_round_trip(name: str) -> None:
    decoded = entry_decoder.decode(zonemta_entries()[name])
    assert msgspec.convert(msgspec.to_builtins(decoded), LogEntry) == decoded
    assert decoded.action in set(Action)


def test_every_fixture_is_one_event_per_recipient_and_queued_lists_them_in_order() -> None:
    counts = {name: len(ZONEMTA.decode(raw)) for name, raw in zonemta_entries().items()}
    assert counts == dict.fromkeys(zonemta_entries(), 1) | {"log_entry_queued": 2}
    _, parts = parse(zonemta_entries()["log_entry_queued"])
    assert [p.recipient for p in parts] == ["carol@yahoo.example", "dave@example.com"]
    assert {p.kind for p in parts} == {"QUEUED"} and {p.id for p in parts} == {"18b0879811a00009a2"}


def test_the_queue_id_says_when_zonemta_made_it() -> None:
    made = datetime(2026, 11, 23, 6, 1, 11, 500000, tzinfo=UTC)
    ms = int(made.timestamp() * 1000)
    assert queue_id_time(seq_index_id(ms)) == made
    assert queue_id_time(seq_index_id(ms, counter=0xFFF, suffix="ffff")) == made  # the counter is below the ms
    assert queue_id_time("18b0879811a00009a2") == datetime(2023, 10, 7, 4, 51, 2, 554000, tzinfo=UTC)
    for other in ("", None, "18B0879811A00009A2", "18b0879811a0000", "not-a-seq-index-id", "18b0879811a00009a2x"):
        assert queue_id_time(other) is None


def test_the_time_of_an_entry_is_the_hook_s_then_the_entry_s_own_then_its_queue_id_s() -> None:
    # _mtactl.at (ms, exactly: no float on the way)
    _, [accepted] = parse(entry("log_entry_accepted", _mtactl={"node": "mta1", "at": AT}))
    assert accepted.at == datetime(2026, 11, 23, 6, 10, 3, 532000, tzinfo=UTC) and accepted.node == "mta1"
    assert accepted.created == queue_id_time("18b0879811a00009a2")
    # no _mtactl: no entry carries its own time (start and timer are durations): the queue id's
    _, [plain] = parse(zonemta_entries()["log_entry_accepted"])
    assert plain.at == plain.created == queue_id_time("18b0879811a00009a2") and plain.node is None
    # a core/http-bounce body: its `time`
    form, view = zonemta_http_bounce()
    [record] = ZONEMTA.split(form, FORM)
    _, [bounce] = parse(record)
    assert bounce.kind == HTTP_BOUNCE and bounce.at == datetime.fromtimestamp(int(view["time"]) / 1000, UTC)


def test_an_entry_with_no_time_to_read_is_refused_naming_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"no time: .*`_mtactl.at`.*`id`"):
        parse(entry("log_entry_accepted", id="custom-id-1"))
    _, [stamped] = parse(entry("log_entry_accepted", id="custom-id-1", _mtactl={"at": AT}))
    assert stamped.created is None and stamped.id == "custom-id-1"
    with pytest.raises(msgspec.ValidationError, match=r"_mtactl.at"):
        parse(entry("log_entry_accepted", _mtactl={"at": 10**17}))  # beyond year 9999


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@x.example", ["a@x.example"]),
        ("a@x.example,b@Y.example", ["a@x.example", "b@Y.example"]),
        (" a@x.example , b@y.example ", ["a@x.example", "b@y.example"]),
        ("<>", []),
        ("", []),
        (None, []),
    ],
)
def test_to_is_one_recipient_or_a_comma_list_or_none(value: str | None, expected: list[str]) -> None:
    assert recipients(value, "to") == expected


@pytest.mark.parametrize("value", ["no-at-sign", "a b@x.example", "a@x.example,nobody", "a@" + "x" * 320])
def test_a_recipient_that_is_not_an_address_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(ValueError, match="`to`"):
        parse(entry("log_entry_queued", to=value))


def test_the_null_sender_is_empty_and_the_envelope_sender_comes_from_from_then_return_path() -> None:
    _, [part, _] = parse(entry("log_entry_queued", **{"from": "<>"}))
    assert part.sender == ""
    _, [part] = parse(entry("log_entry_accepted", **{"from": None, "returnPath": "bounces@sender.example"}))
    assert part.sender == "bounces@sender.example"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": None, "action": None}, "action"),
        ({"defcount": "five"}, "defcount"),
        ({"nextattempt": 2**70}, "nextattempt"),
        ({"to": ["carol@yahoo.example"]}, "to"),
        ({"action": "X" * 41}, "action"),
    ],
)
def test_fields_of_the_wrong_shape_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises((ValueError, msgspec.ValidationError), match=field):
        parse(entry("log_entry_deferred", **changes))


def test_an_entry_without_its_id_is_refused() -> None:
    raw = json.loads(zonemta_entries()["log_entry_deferred"])
    del raw["id"]
    with pytest.raises(msgspec.ValidationError, match="`id`"):
        parse(json.dumps(raw).encode())


def test_unknown_fields_and_actions_are_kept_in_the_payload() -> None:
    raw = entry("log_entry_accepted", action="VERIFY_BLOCKED", score=7.5, nested={"a": [1, 2]})
    payload, [part] = parse(raw)
    assert part.kind == "VERIFY_BLOCKED" and json.loads(payload)["nested"] == {"a": [1, 2]}


def test_the_http_bounce_form_is_stored_as_its_fields_and_the_mark_of_where_they_came_from() -> None:
    form, view = zonemta_http_bounce()
    record = json.loads(form_record(form))
    assert record == view | {"_mtactl": {"form": HTTP_BOUNCE_FORM}}
    with pytest.raises(msgspec.DecodeError, match="UTF-8"):
        form_record(b"id=%ff%fe&to=a%40b.example")


def test_a_body_is_split_as_json_unless_it_is_a_form_that_does_not_start_as_json_does() -> None:
    batch = zonemta_batch()
    assert len(ZONEMTA.split(batch, "application/json")) == len(zonemta_entries())
    assert len(ZONEMTA.split(batch, FORM)) == len(zonemta_entries())  # `curl -d @batch.json` labels it a form
    single = zonemta_entries()["log_entry_deleted"]
    assert ZONEMTA.split(single, FORM) == [single]
    form, _ = zonemta_http_bounce()
    with pytest.raises(msgspec.DecodeError):  # a form labelled JSON: the body is not JSON
        ZONEMTA.split(form, "application/json")


def test_a_nul_in_an_entry_is_written_as_an_escape_in_every_column() -> None:
    [event] = ZONEMTA.decode(entry("log_entry_rejected", response="550 5.1.1 no\u0000body", zone="z\u0000"))
    assert "\x00" not in event.payload
    _, [part] = parse(event.payload.encode())
    assert part.response == "550 5.1.1 no\\u0000body" and part.zone == "z\\u0000"
