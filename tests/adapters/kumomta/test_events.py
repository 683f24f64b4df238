"""The shapes of kumod's JsonLogRecord that KumoLogRecord decodes (see fixtures/kumomta/README.md)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from adapters.kumomta.events import KumoLogRecord, record_decoder
from tests.support import kumomta_records


def fixture(name: str, **changes: Any) -> bytes:
    return json.dumps(json.loads(kumomta_records()[name]) | changes).encode()


@pytest.mark.parametrize("name", sorted(kumomta_records()))
def test_every_fixture_decodes_and_survives_a_round_trip(name: str) -> None:
    record = record_decoder.decode(kumomta_records()[name])
    assert msgspec.convert(msgspec.to_builtins(record), KumoLogRecord) == record


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("a@x.example", ["a@x.example"]),
        (["a@x.example"], ["a@x.example"]),
        (["a@x.example", "b@x.example"], ["a@x.example", "b@x.example"]),
    ],
)
def test_the_recipient_decodes_as_one_address_or_a_list(recipient: str | list[str], expected: list[str]) -> None:
    record = record_decoder.decode(fixture("log_delivery", recipient=recipient))
    assert record.recipients == expected
    assert [part.recipient for part in record.per_recipient()] == expected


def test_a_record_naming_one_recipient_is_its_own_only_part() -> None:
    record = record_decoder.decode(kumomta_records()["log_delivery"])
    assert record.per_recipient() == [record] and record.recipient == "jane.doe@gmail.com"


@pytest.mark.parametrize(
    "recipient",
    ["no-at-sign", "a@" + "x" * 320, ["a@x.example", "not an address"], ["a@x.example", "b@" + "x" * 320]],
)
def test_every_listed_recipient_is_held_to_the_same_bounds_as_a_lone_one(recipient: str | list[str]) -> None:
    with pytest.raises(msgspec.ValidationError, match="recipient"):
        record_decoder.decode(fixture("log_delivery", recipient=recipient))


@pytest.mark.parametrize("empty", [{"id": ""}, {"queue": ""}, {"recipient": ""}, {"recipient": []}])
def test_a_record_about_a_message_must_name_it(empty: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError, match="only a Rejection"):
        record_decoder.decode(fixture("log_delivery", **empty))


def test_a_rejection_before_any_message_existed_decodes_with_its_empty_fields() -> None:
    record = record_decoder.decode(kumomta_records()["log_rejection_at_mail_from"])
    assert (record.id, record.queue, record.sender, record.recipient) == ("", "", "", "")
    assert record.session_id == "7d8e9fa0-1b2c-4d3e-8f4a-5b6c7d8e9fa0"


def test_the_column_bounds_still_hold_for_a_rejection() -> None:
    with pytest.raises(msgspec.ValidationError, match="id"):
        record_decoder.decode(fixture("log_rejection", id="x" * 101))
    with pytest.raises(msgspec.ValidationError, match="queue"):
        record_decoder.decode(fixture("log_rejection", queue="q" * 256))
