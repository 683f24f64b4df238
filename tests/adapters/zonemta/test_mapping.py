from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any

import msgspec
import pytest

from adapters.kumomta.events import record_decoder
from adapters.kumomta.mapping import message_uuid as kumomta_message_uuid
from adapters.model import BounceType, MessageQueueStatus
from adapters.model.observation import MessageObservation, check_against_model, merge
from adapters.zonemta.events import Action, Entry
from adapters.zonemta.log_source import ZONEMTA, parse
from adapters.zonemta.mapping import (
    ACTION_STATUS,
    CATEGORY_TYPE,
    ZONEMTA_NAMESPACE,
    admit,
    bounce_type,
    dedupe_key,
    message_uuid,
    observe,
    parse_reply,
    status_of,
)
from tests.support import kumomta_records, zonemta_entries, zonemta_http_bounce

S = MessageQueueStatus
FORM = "application/x-www-form-urlencoded"
AT = 1_795_414_203_532

# fixture -> (status, bounce type) of each recipient's message, or None for an entry that only lands as an event
EXPECTED = {
    "log_entry_queued": (S.ready, None),
    "log_entry_accepted": (S.delivered, None),
    "log_entry_deferred": (S.deferred, BounceType.soft),  # rate
    "log_entry_rejected": (S.bounced, BounceType.hard),  # recipient
    "log_entry_drop_suppressed": (S.cancelled, None),  # the suppression list: neither a bounce nor delivered
    "log_entry_deleted": None,  # names the delivery by seq, not its recipient
    "log_entry_queue_bounce": None,  # a DSN queued under its own id
}

# The categories ZoneMTA gives (zone-mta 3.10.18): the third column of config/bounces.txt, and those lib/sender.js
# and lib/bounces.js set (dns, http, network, policy, other).
BOUNCES_TXT = {
    *("auth", "blacklist", "block", "capacity", "config", "dmarc", "envelope", "greylist", "message"),
    *("network", "other", "policy", "protocol", "rate", "recipient", "sender", "spam", "virus"),
}
SET_IN_CODE = ["dns", "http", "network", "policy", "other"]


def parts(name: str, **changes: Any) -> list[Entry]:
    raw = json.dumps(json.loads(zonemta_entries()[name]) | changes).encode()
    return parse(raw)[1]


def only(name: str, **changes: Any) -> Entry:
    [part] = parts(name, **changes)
    return part


def test_every_fixture_is_covered() -> None:
    assert set(zonemta_entries()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_action_maps_as_the_table_says(name: str) -> None:
    for part in parts(name):
        observation = observe(part)
        if EXPECTED[name] is None:
            assert observation is None and status_of(part) is None
            continue
        assert observation is not None
        check_against_model(observation)
        assert (observation.status, observation.bounce_classification) == EXPECTED[name]
        assert observation.recipient == part.recipient and observation.id == message_uuid(part)
        assert observation.queue_name == observation.domain == part.recipient.rpartition("@")[2].lower()
        assert observation.tenant_id is None and observation.campaign_id is None


def test_the_http_bounce_is_the_rejection_of_the_same_message() -> None:
    form, _ = zonemta_http_bounce()
    [record] = ZONEMTA.split(form, FORM)
    [bounce] = parse(record)[1]
    observation = observe(bounce)
    assert observation is not None and observation.status is S.bounced
    assert observation.bounce_classification is BounceType.hard and observation.id == message_uuid(
        only("log_entry_rejected")
    )
    assert observation.smtp_response is not None and observation.smtp_response.enhanced_code == "5.1.1"
    assert observation.metadata == {"mta_message_id": "18b0879811a00009b7", "zonemta_seq": "003"}


def test_the_statuses_are_of_zonemta_s_own_actions() -> None:
    assert set(ACTION_STATUS) <= {a.value for a in Action}
    assert status_of(only("log_entry_drop_suppressed")) is S.cancelled
    intake_drop = only("log_entry_drop_suppressed", seq=None, recipient=None, to="a@x.example")
    assert status_of(intake_drop) is None  # a plugin's drop() before the message was queued
    for action in ("NOQUEUE", "SPAMCHECK", "VIRUSCHECK", "QUEUE_POLL", "SOMETHING_ELSE"):
        assert status_of(only("log_entry_accepted", action=action)) is None


def test_every_category_zonemta_gives_has_its_bounce_type() -> None:
    assert BOUNCES_TXT | set(SET_IN_CODE) == set(CATEGORY_TYPE)
    rejected = only("log_entry_rejected")
    assert bounce_type(rejected._replace(category="mine")) is BounceType.unknown
    assert bounce_type(rejected._replace(category=None)) is BounceType.unknown
    deferred = only("log_entry_deferred")
    assert bounce_type(deferred._replace(category="other")) is BounceType.soft  # a deferral is at least soft
    assert bounce_type(deferred._replace(category="spam")) is BounceType.block


def test_a_deferral_counts_its_attempts_and_says_when_the_next_is() -> None:
    observation = observe(only("log_entry_deferred"))
    assert observation is not None
    assert observation.num_attempts == 5 and observation.next_attempt_at == datetime(
        2026, 11, 23, 7, 21, 12, 733000, tzinfo=UTC
    )
    assert observation.pool_name == "default"
    assert observation.metadata == {"mta_message_id": "18b0879811a00009a2", "zonemta_seq": "001", "zone": "default"}
    assert observation.last_bounce_reason is not None and observation.last_bounce_reason.startswith("421 RP-001")


def test_queued_gives_the_headers_it_logs_and_the_body_size() -> None:
    observation = observe(parts("log_entry_queued")[0])
    assert observation is not None
    assert observation.headers == {
        "Message-ID": "<c1f0a2e4-77aa-4b1e-9d2e-0f5e1d2a3b4c@sender.example>",
        "Subject": "November update",
    }
    assert observation.message_id == "<c1f0a2e4-77aa-4b1e-9d2e-0f5e1d2a3b4c@sender.example>"
    assert observation.size_bytes == 5321 and observation.num_attempts == 0
    without = observe(parts("log_entry_queued", **{"message-id": "<>"})[0])
    assert without is not None and without.message_id == "18b0879811a00009a2"


def test_message_uuids_are_per_queue_id_and_recipient_in_a_namespace_of_their_own() -> None:
    accepted = only("log_entry_accepted")
    assert message_uuid(accepted) == uuid.uuid5(ZONEMTA_NAMESPACE, "zonemta\x0018b0879811a00009a2\x00dave@example.com")
    assert message_uuid(accepted._replace(recipient="dave@EXAMPLE.com")) == message_uuid(accepted)
    assert message_uuid(accepted._replace(recipient="Dave@example.com")) != message_uuid(accepted)
    queued = {message_uuid(p) for p in parts("log_entry_queued")}
    assert message_uuid(accepted) in queued and message_uuid(only("log_entry_deferred")) in queued
    kumo = record_decoder.decode(kumomta_records()["log_delivery"])
    same_names = accepted._replace(id=kumo.id, recipient=kumo.recipient)
    assert message_uuid(same_names) != kumomta_message_uuid(kumo)


def test_the_same_entry_has_the_same_key_and_distinct_entries_do_not_collide() -> None:
    deferred = only("log_entry_deferred")
    assert dedupe_key(deferred) == dedupe_key(only("log_entry_deferred"))
    later = deferred._replace(defcount=6, next_attempt=deferred.next_attempt + timedelta(hours=4))
    stamped = only("log_entry_deferred", _mtactl={"node": "mta1", "at": AT})
    failure_dsn = only("log_entry_queue_bounce")
    delay_dsn = only("log_entry_queue_bounce", bounceType="delayed", bounceId="18b0879a02100001f1")
    queued = parts("log_entry_queued")
    keys = [dedupe_key(e) for e in (deferred, later, stamped, failure_dsn, delay_dsn, *queued)]
    assert len(set(keys)) == len(keys)
    assert {len(k) for k in keys} == {16}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("550 5.1.1 <a@b.example>: User unknown", (550, "5.1.1", "<a@b.example>: User unknown")),
        ("250 2.0.0 Ok: queued as 4XyZ1k2L3m", (250, "2.0.0", "Ok: queued as 4XyZ1k2L3m")),
        ("421 RP-001 (MX-HOST) try later", (421, None, "RP-001 (MX-HOST) try later")),
        ("452-4.2.2 over quota", (452, "4.2.2", "over quota")),
        ("550", (550, None, "")),
        ("554 5.7.1000 odd", (554, None, "5.7.1000 odd")),
        ("5501 not a code", None),
        ("Network error: Error connecting to mx1.example.com. ECONNREFUSED", None),
        ("", None),
        (None, None),
    ],
)
def test_a_reply_is_its_code_enhanced_code_and_text(text: str | None, expected: Any) -> None:
    assert parse_reply(text) == expected


def test_a_reply_that_is_not_smtp_is_kept_as_the_reason_only() -> None:
    rejected = only("log_entry_rejected", response="Network error: no MX", category="dns")
    observation = observe(rejected)
    assert observation is not None and observation.smtp_response is None
    assert observation.last_bounce_reason == "Network error: no MX" and observation.bounce_classification == "hard"


def merged_views(observations: list[MessageObservation]) -> set[str]:
    """The merge of every order of the observations, as JSON: one element when the order does not matter."""
    orders = itertools.permutations(observations)
    return {msgspec.json.encode(reduce(merge, order), order="sorted").decode() for order in orders}


def lifecycle() -> list[Entry]:
    """One delivery's entries as the log:entry plugin posts them: queued, deferred twice, accepted."""
    return [
        parts("log_entry_queued", _mtactl={"node": "mta1", "at": AT})[0],
        only("log_entry_deferred", _mtactl={"node": "mta1", "at": AT + 60_000}, defcount=1),
        only("log_entry_deferred", _mtactl={"node": "mta1", "at": AT + 420_000}, defcount=2),
        only("log_entry_accepted", to="carol@yahoo.example", seq="001", _mtactl={"node": "mta1", "at": AT + 900_000}),
    ]


def test_whatever_order_the_entries_come_in_the_message_ends_as_the_last_said() -> None:
    observations = [o for o in map(observe, lifecycle()) if o is not None]
    assert len(merged_views(observations)) == 1
    final = reduce(merge, reversed(observations))
    assert final.status is S.delivered and final.num_attempts == 2 and final.next_attempt_at is None
    assert final.headers is not None and final.headers["Subject"] == "November update"
    assert final.created_at == datetime(2023, 10, 7, 4, 51, 2, 554000, tzinfo=UTC)  # the queue id's time


def test_entries_without_a_time_of_their_own_still_merge_the_same_whatever_their_order() -> None:
    entries = [parts("log_entry_queued")[0], only("log_entry_deferred"), only("log_entry_deferred", defcount=6)]
    observations = [o for o in map(observe, entries) if o is not None]
    assert len(merged_views(observations)) == 1


def test_facts_name_the_zone_the_node_the_category_and_the_delivery_time() -> None:
    raw = json.dumps(json.loads(zonemta_entries()["log_entry_accepted"]) | {"_mtactl": {"node": "mta1", "at": AT}})
    [event] = ZONEMTA.decode(raw.encode())
    facts = ZONEMTA.facts(event.payload, event.recipient)
    assert (facts.egress_source, facts.egress_pool, facts.node, facts.bounce_class) == (
        "default",
        "default",
        "mta1",
        None,
    )
    created = datetime(2023, 10, 7, 4, 51, 2, 554000, tzinfo=UTC)
    assert facts.delivery_seconds == (event.event_at - created).total_seconds()
    [raw_accepted] = ZONEMTA.decode(zonemta_entries()["log_entry_accepted"])  # no time of its own: not measured
    assert ZONEMTA.facts(raw_accepted.payload, raw_accepted.recipient).delivery_seconds is None
    [deferred] = ZONEMTA.decode(zonemta_entries()["log_entry_deferred"])
    assert ZONEMTA.facts(deferred.payload, deferred.recipient).bounce_class == "rate"
    queued = ZONEMTA.decode(zonemta_entries()["log_entry_queued"])
    assert [ZONEMTA.facts(e.payload, e.recipient).observation.recipient for e in queued] == [  # type: ignore[union-attr]
        "carol@yahoo.example",
        "dave@example.com",
    ]


def test_values_the_model_forbids_are_refused_by_admit_naming_the_field() -> None:
    cases = {
        "message-id": parts("log_entry_queued", **{"message-id": "<" + "m" * 997 + ">"})[0],
        "zone": only("log_entry_accepted", zone="z" * 101),
        "size": only("log_entry_accepted", size=-1),
        "defcount": only("log_entry_deferred", defcount=-1),
        "`from`": only("log_entry_accepted", **{"from": "not an address"}),
        "`recipient` names no recipient": only("log_entry_drop_suppressed", recipient=""),
    }
    for field, part in cases.items():
        with pytest.raises(ValueError, match=field):
            admit(part)
        observation = observe(part)
        assert observation is not None
        with pytest.raises(msgspec.ValidationError):
            check_against_model(observation)


def test_a_log_entry_cannot_pass_itself_off_as_an_http_bounce() -> None:
    with pytest.raises(ValueError, match="HTTP_BOUNCE"):
        parts("log_entry_rejected", action="HTTP_BOUNCE")
