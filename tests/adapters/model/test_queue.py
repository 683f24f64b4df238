from __future__ import annotations

import json

import msgspec
import pytest

from adapters.model import (
    BounceType,
    MessageQueueItem,
    MessageQueueStatus,
    QueueFilter,
    QueueOperation,
    QueueOperationType,
    QueueSortField,
    QueueState,
    SmtpResponse,
    validated,
)
from tests.support import load_fixture, make_message


def test_the_seed_example_message_decodes_and_encodes_back_unchanged() -> None:
    example = load_fixture("model/appendix_a_message.json")
    message = msgspec.json.decode(json.dumps(example), type=MessageQueueItem)
    assert message.status is MessageQueueStatus.ready
    assert message.headers == {
        "Subject": "Weekly Newsletter",
        "From": "newsletter@company.com",
        "To": "john@example.com",
    }
    assert json.loads(msgspec.json.encode(message)) == example


def test_the_model_has_the_seeds_31_fields_and_enum_sizes() -> None:
    assert len(MessageQueueItem.__struct_fields__) == 31
    assert [len(e) for e in (MessageQueueStatus, QueueState, BounceType, QueueSortField, QueueOperationType)] == [
        9,
        4,
        5,
        7,
        8,
    ]


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("recipient", "not-an-address", "recipient"),
        ("sender", "two@@example.com", "sender"),
        ("priority", 11, "priority"),
        ("priority", -1, "priority"),
        ("created_at", "2025-11-01T10:00:00", "created_at"),  # no timezone
        ("created_at", "yesterday", "created_at"),
        ("status", "waiting", "status"),
        ("queue_state", "paused", "queue_state"),
        ("bounce_classification", "bouncy", "bounce_classification"),
        ("delivery_protocol", "ESMTP", "delivery_protocol"),
        ("body_hash", "abc", "body_hash"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(field: str, value: object, complaint: str) -> None:
    example = load_fixture("model/appendix_a_message.json") | {field: value}
    with pytest.raises(msgspec.ValidationError, match=rf"\$\.{complaint}"):
        msgspec.json.decode(json.dumps(example), type=MessageQueueItem)


def test_the_null_sender_is_a_valid_envelope_sender() -> None:
    example = load_fixture("model/appendix_a_message.json") | {"sender": ""}
    assert msgspec.json.decode(json.dumps(example), type=MessageQueueItem).sender == ""


def test_unknown_fields_are_refused() -> None:
    example = load_fixture("model/appendix_a_message.json") | {"customerName": "x"}
    with pytest.raises(msgspec.ValidationError, match="customerName"):
        msgspec.json.decode(json.dumps(example), type=MessageQueueItem)


def test_validated_catches_constraints_on_structs_built_in_code() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.priority"):
        validated(make_message(priority=42))
    assert validated(make_message(priority=10)).priority == 10


def test_smtp_response_round_trips_with_an_enhanced_code() -> None:
    raw = b'{"code":550,"message":"no such user","enhanced_code":"5.1.1","timestamp":"2026-11-23T08:30:00Z"}'
    response = msgspec.json.decode(raw, type=SmtpResponse)
    assert response.enhanced_code == "5.1.1"
    assert msgspec.json.encode(response) == raw
    with pytest.raises(msgspec.ValidationError, match="enhanced_code"):
        msgspec.json.decode(raw.replace(b"5.1.1", b"x.1"), type=SmtpResponse)


def test_a_filter_accepts_a_single_status_or_a_list() -> None:
    one = msgspec.json.decode(b'{"status": "bounced"}', type=QueueFilter)
    many = msgspec.json.decode(b'{"status": ["bounced", "expired"]}', type=QueueFilter)
    assert one.statuses() == [MessageQueueStatus.bounced]
    assert many.statuses() == [MessageQueueStatus.bounced, MessageQueueStatus.expired]
    assert QueueFilter().limit == 50 and QueueFilter().sort_order == "desc"


def test_filter_domains_merge_and_lower_case() -> None:
    query = QueueFilter(domain="Gmail.com", domains=["yahoo.com", "gmail.com"])
    assert query.all_domains() == ["gmail.com", "yahoo.com"]


def test_a_queue_operation_names_one_of_the_eight_operations() -> None:
    op = msgspec.json.decode(b'{"operation": "set_priority", "metadata": {"priority": 9}}', type=QueueOperation)
    assert op.operation is QueueOperationType.set_priority
    with pytest.raises(msgspec.ValidationError, match="operation"):
        msgspec.json.decode(b'{"operation": "explode"}', type=QueueOperation)
