from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.kumomta.events import KumoLogRecord, RecordType, record_decoder
from adapters.kumomta.mapping import (
    BOUNCE_CLASS_TYPE,
    CANCEL_MARK,
    KUMOMTA_NAMESPACE,
    RECORD_STATUS,
    dedupe_key,
    message_uuid,
    observe,
)
from adapters.model import BounceType, MessageQueueStatus
from adapters.model.observation import MessageObservation, merge
from adapters.model.records import split_body
from tests.support import kumomta_records, shared_fixture

S = MessageQueueStatus

# fixture -> (status, bounce type) of every recipient's message, or None for a record that only lands as an event
EXPECTED = {
    "log_reception": (S.ready, None),
    "log_delivery": (S.delivered, None),
    "log_transient_failure": (S.deferred, BounceType.block),  # SpamBlock
    "log_bounce": (S.bounced, BounceType.hard),  # InvalidRecipient
    "log_expiration": (S.expired, BounceType.soft),  # MessageExpired
    "log_admin_bounce": (S.bounced, BounceType.unknown),  # Uncategorized; an operator's bounce (kcli, mtactl bounce)
    "log_oob": (S.bounced, BounceType.hard),
    "log_feedback": None,
    "log_rejection": None,
    "log_rejection_at_mail_from": None,
    "log_admin_rebind": (S.ready, None),
    "log_deferred_injection_rebind": (S.ready, None),
    "log_delayed": (S.scheduled, None),
    "log_xfer_in": (S.ready, None),
    "log_xfer_out": None,
    "log_delivery_recipient_list": (S.delivered, None),
}


def test_every_fixture_record_type_is_covered() -> None:
    assert set(kumomta_records()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_record_type_maps_as_the_table_says(name: str) -> None:
    for record in record_decoder.decode(kumomta_records()[name]).per_recipient():
        observation = observe(record)
        if EXPECTED[name] is None:
            assert observation is None
            continue
        assert observation is not None
        assert (observation.status, observation.bounce_classification) == EXPECTED[name]
        assert observation.status is RECORD_STATUS[record.type]
        assert observation.recipient == record.recipient and observation.sender == record.sender
        assert observation.id == message_uuid(record)


def test_every_record_type_kumod_writes_has_a_fixture() -> None:
    types = {record_decoder.decode(raw).type for raw in kumomta_records().values()}
    assert types == {t.value for t in RecordType}


def test_types_that_only_land_as_events_are_exactly_the_ones_not_about_a_queued_message() -> None:
    assert {t.value for t in RecordType} - set(RECORD_STATUS) == {"Feedback", "Rejection", "XferOut"}


def test_a_record_listing_several_recipients_is_one_message_and_one_event_per_recipient() -> None:
    batch = record_decoder.decode(kumomta_records()["log_delivery_recipient_list"])
    parts = batch.per_recipient()
    assert [p.recipient for p in parts] == ["ann@example.com", "ben@example.com", "cat@example.com"]
    observations = [observe(p) or pytest.fail() for p in parts]
    assert len({o.id for o in observations}) == 3 and len({dedupe_key(p) for p in parts}) == 3
    assert {o.status for o in observations} == {S.delivered}


def test_a_listed_recipient_is_keyed_as_if_kumod_had_logged_it_alone() -> None:
    raw = json.loads(kumomta_records()["log_delivery_recipient_list"])
    alone = record_decoder.decode(json.dumps(raw | {"recipient": "ben@example.com"}))
    listed = record_decoder.decode(json.dumps(raw)).per_recipient()[1]
    assert (message_uuid(listed), dedupe_key(listed)) == (message_uuid(alone), dedupe_key(alone))
    assert observe(listed) == observe(alone)


def test_a_record_listing_several_recipients_must_be_split_before_it_is_mapped() -> None:
    batch = record_decoder.decode(kumomta_records()["log_delivery_recipient_list"])
    with pytest.raises(ValueError, match="3 recipients"):
        observe(batch)


def test_kumods_own_notes_are_not_taken_for_an_smtp_reply() -> None:
    for name in ("log_delayed", "log_deferred_injection_rebind", "log_xfer_in"):
        observation = observe(record_decoder.decode(kumomta_records()[name])) or pytest.fail()
        assert (observation.smtp_response, observation.delivery_protocol) == (None, None), name


def test_an_xfer_in_is_queued_under_its_new_spool_id() -> None:
    xfer_in = record_decoder.decode(kumomta_records()["log_xfer_in"])
    xfer_out = record_decoder.decode(kumomta_records()["log_xfer_out"])
    assert xfer_out.response is not None and xfer_out.response.content == f"new id is {xfer_in.id}"
    assert observe(xfer_out) is None and (observe(xfer_in) or pytest.fail()).status is S.ready


def test_refusals_without_a_message_are_told_apart_by_their_session() -> None:
    raw = json.loads(kumomta_records()["log_rejection_at_mail_from"])
    other_connection = raw | {"session_id": "00000000-0000-4000-8000-000000000001"}
    assert dedupe_key(record_decoder.decode(json.dumps(raw))) != dedupe_key(
        record_decoder.decode(json.dumps(other_connection))
    )


def test_the_delivery_record_fills_the_mirror_fields() -> None:
    o = observe(record_decoder.decode(kumomta_records()["log_delivery"]))
    assert o is not None
    assert (o.queue_name, o.domain, o.tenant_id, o.campaign_id) == (
        "spring-promo:acme@gmail.com",
        "gmail.com",
        "acme",
        "spring-promo",
    )
    assert (o.pool_name, o.delivery_protocol, o.size_bytes) == ("pool-a", "smtp", 18244)
    assert o.smtp_response is not None and o.smtp_response.code == 250
    assert o.delivered_at == datetime(2026, 11, 23, 8, 30, 0, 412003, tzinfo=UTC)
    assert o.created_at == datetime(2026, 11, 23, 8, 29, 1, 118230, tzinfo=UTC)
    assert o.headers == {"Subject": "Spring deals inside"}


def test_enhanced_codes_become_dotted_strings() -> None:
    o = observe(record_decoder.decode(kumomta_records()["log_bounce"]))
    assert o is not None and o.smtp_response is not None and o.smtp_response.enhanced_code == "5.1.1"
    assert o.last_bounce_reason and o.last_bounce_reason.startswith("The email account")


def test_tenant_and_campaign_fall_back_to_meta() -> None:
    o = observe(record_decoder.decode(kumomta_records()["log_expiration"]))  # queue acme@slow.example
    assert o is not None and (o.tenant_id, o.campaign_id) == ("acme", "spring-promo")


def test_user_defined_bounce_classes_are_unknown_and_transient_failures_soft() -> None:
    raw = json.loads(kumomta_records()["log_transient_failure"])
    o = observe(
        msgspec.json.decode(
            json.dumps(raw | {"bounce_classification": "MyCustomClass"}),
            type=type(record_decoder.decode(kumomta_records()["log_delivery"])),
        )
    )
    assert o is not None and o.bounce_classification is BounceType.soft
    assert (
        BOUNCE_CLASS_TYPE["SpamBlock"] is BounceType.block and BOUNCE_CLASS_TYPE["Uncategorized"] is BounceType.unknown
    )


def test_a_batch_body_splits_into_its_records_and_unknown_fields_are_tolerated() -> None:
    raws = split_body(shared_fixture("kumomta/webhook_batch.json"))
    assert [record_decoder.decode(r).type for r in raws] == ["Reception", "Delivery", "TransientFailure", "Bounce"]
    extra = json.loads(kumomta_records()["log_delivery"]) | {"brand_new_field": {"x": 1}}
    assert record_decoder.decode(json.dumps(extra)).type == "Delivery"


def test_the_same_record_always_has_the_same_key_and_different_attempts_differ() -> None:
    raw = json.loads(kumomta_records()["log_transient_failure"])
    first = record_decoder.decode(json.dumps(raw))
    again = record_decoder.decode(json.dumps(raw))
    later = record_decoder.decode(json.dumps(raw | {"num_attempts": 3}))
    assert dedupe_key(first) == dedupe_key(again) != dedupe_key(later)


@pytest.mark.parametrize("missing", ["type", "id", "recipient", "queue", "timestamp"])
def test_records_without_a_required_field_are_refused(missing: str) -> None:
    raw = json.loads(kumomta_records()["log_delivery"])
    del raw[missing]
    with pytest.raises(msgspec.ValidationError, match=missing):
        record_decoder.decode(json.dumps(raw))


BASE = datetime(2026, 11, 23, tzinfo=UTC)
observations = st.builds(
    MessageObservation,
    id=st.just(message_uuid(record_decoder.decode(kumomta_records()["log_delivery"]))),
    message_id=st.just("m"),
    queue_name=st.sampled_from(["a@x.com", "b@x.com"]),
    recipient=st.just("r@x.com"),
    sender=st.just("s@y.com"),
    domain=st.just("x.com"),
    status=st.sampled_from(S),
    status_at=st.integers(0, 10_000).map(lambda s: BASE + timedelta(seconds=s)),
    size_bytes=st.integers(0, 100),
    num_attempts=st.integers(0, 20),
    last_attempt_at=st.none() | st.integers(0, 10_000).map(lambda s: BASE + timedelta(seconds=s)),
    created_at=st.integers(0, 100).map(lambda s: BASE + timedelta(seconds=s)),
    failure_at=st.none() | st.integers(0, 10_000).map(lambda s: BASE + timedelta(seconds=s)),
    last_bounce_reason=st.none() | st.sampled_from(["x", "y"]),
)


@given(observations, observations, observations)
def test_merging_is_commutative_and_associative(
    a: MessageObservation, b: MessageObservation, c: MessageObservation
) -> None:
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(st.lists(observations, min_size=2, max_size=6))
def test_a_terminal_status_is_never_undone_by_a_later_queued_one(items: list[MessageObservation]) -> None:
    merged = items[0]
    for item in items[1:]:
        merged = merge(merged, item)
    terminal = [i for i in items if i.status in (S.delivered, S.bounced, S.expired, S.cancelled)]
    if terminal:
        assert merged.status in (S.delivered, S.bounced, S.expired, S.cancelled)


def test_message_ids_stay_the_uuid5_of_the_spool_id_and_recipient() -> None:
    # Mirrored rows are keyed by this id: it must never change between releases for the same record.
    record = record_decoder.decode(kumomta_records()["log_delivery"])
    local, _, domain = record.recipient.rpartition("@")
    expected = uuid.uuid5(KUMOMTA_NAMESPACE, f"{record.id}\x00{local}@{domain.lower()}")
    assert message_uuid(record) == expected and message_uuid(record).version == 5


def test_an_admin_bounce_from_an_mtactl_cancel_is_mirrored_as_cancelled_and_any_other_as_bounced() -> None:
    record = msgspec.json.decode(kumomta_records()["log_admin_bounce"], type=KumoLogRecord)
    assert record.response is not None
    cancelled = msgspec.structs.replace(
        record,
        response=msgspec.structs.replace(
            record.response, content="Administrator bounced with reason: " + CANCEL_MARK + "customer asked"
        ),
    )
    assert (observe(record) or pytest.fail()).status is S.bounced
    assert (observe(cancelled) or pytest.fail()).status is S.cancelled


def test_an_array_with_an_element_too_deep_for_the_decoder_is_still_split() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    body = b' [ {"a": "],[{\\""}, ' + deep + b", 3 ] "
    assert [bytes(r) for r in split_body(body)] == [b' {"a": "],[{\\""}', b" " + deep, b" 3 "]
    assert split_body(b"[" + deep + b"]") == [deep]
    with pytest.raises(msgspec.DecodeError):
        split_body(b"[" + deep)
    with pytest.raises(msgspec.DecodeError):
        split_body(b"[" + deep + b"] x")


def test_an_empty_egress_pool_is_no_pool() -> None:
    record = json.loads(kumomta_records()["log_delivery"]) | {"egress_pool": ""}
    observation = observe(record_decoder.decode(json.dumps(record)))
    assert observation is not None and observation.pool_name is None


def test_the_record_types_are_kumods_own() -> None:
    # RecordType in crates/kumo-log-types/src/lib.rs (KumoCorp/kumomta at 3ebc1e85), less `Any` (a logging filter)
    kumod = [
        "Reception",
        "Delivery",
        "Bounce",
        "TransientFailure",
        "Expiration",
        "AdminBounce",
        "OOB",
        "Feedback",
        "Rejection",
        "AdminRebind",
        "DeferredInjectionRebind",
        "Delayed",
        "XferOut",
        "XferIn",
    ]
    assert [t.value for t in RecordType] == kumod
