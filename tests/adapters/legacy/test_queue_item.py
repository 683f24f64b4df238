from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.legacy import (
    LEGACY_TO_STATUS,
    STATUS_TO_LEGACY,
    LegacyStatus,
    QueueItem,
    adapt_legacy_to_message,
    adapt_message_to_legacy,
    legacy_message_uuid,
)
from adapters.model import MessageQueueStatus, validated
from tests.support import load_fixture, make_message


def appendix_a() -> QueueItem:
    return msgspec.json.decode(json.dumps(load_fixture("legacy/appendix_a_queue_item.json")), type=QueueItem)


def test_the_seed_legacy_example_maps_as_table_3_1_says() -> None:
    message = validated(adapt_legacy_to_message(appendix_a()))
    assert str(message.id) == "550e8400-e29b-41d4-a716-446655440000"
    assert message.status is MessageQueueStatus.ready
    assert message.tenant_id == "CUST-123"
    assert message.recipient == "john@example.com"
    assert message.domain == "example.com"
    assert message.campaign_id == "technical-support"
    assert message.priority == 8
    assert message.metadata is not None and message.metadata["notes"] == "Needs urgent help"
    assert message.next_attempt_at == datetime(2025, 11, 1, 10, 15, tzinfo=UTC)
    assert message.queue_name == "technical-support:CUST-123@example.com"


def test_mapping_back_at_creation_time_restores_the_legacy_item_exactly() -> None:
    original = appendix_a()
    message = adapt_legacy_to_message(original)
    assert adapt_message_to_legacy(message, now=message.created_at) == original


def test_the_live_legacy_view_counts_minutes_until_the_next_attempt_and_never_below_zero() -> None:
    message = adapt_legacy_to_message(appendix_a())
    assert adapt_message_to_legacy(message, now=message.created_at + timedelta(minutes=10)).estimatedWaitTime == 5
    assert adapt_message_to_legacy(message, now=message.created_at + timedelta(hours=2)).estimatedWaitTime == 0


def test_status_table_3_2_is_the_legacy_to_new_mapping() -> None:
    assert {k.value: v.value for k, v in LEGACY_TO_STATUS.items()} == {
        "waiting": "ready",
        "in-progress": "in_delivery",
        "completed": "delivered",
        "cancelled": "cancelled",
    }


def test_every_new_status_has_a_legacy_reading_as_the_seeds_adapt_status() -> None:
    assert set(STATUS_TO_LEGACY) == set(MessageQueueStatus)
    assert STATUS_TO_LEGACY[MessageQueueStatus.scheduled] is LegacyStatus.waiting
    assert STATUS_TO_LEGACY[MessageQueueStatus.bounced] is LegacyStatus.cancelled
    assert STATUS_TO_LEGACY[MessageQueueStatus.expired] is LegacyStatus.cancelled
    assert STATUS_TO_LEGACY[MessageQueueStatus.deferred] is LegacyStatus.waiting


def test_a_message_born_in_the_new_model_reads_with_the_seeds_defaults() -> None:
    message = make_message(
        campaign_id=None,
        tenant_id=None,
        status=MessageQueueStatus.delivered,
        delivered_at=datetime(2026, 11, 1, 13, 0, tzinfo=UTC),
    )
    item = adapt_message_to_legacy(message, now=message.created_at)
    assert item.customerName == "N/A"
    assert item.serviceType == "email"
    assert item.customerId == ""
    assert item.status is LegacyStatus.completed
    assert item.updatedAt == message.created_at
    assert item.actualWaitTime == round((message.delivered_at - message.created_at).total_seconds() / 60)  # type: ignore[operator]


def test_a_non_uuid_legacy_id_maps_to_a_stable_uuid_and_is_kept() -> None:
    item = msgspec.structs.replace(appendix_a(), id="Q-77")
    first, second = adapt_legacy_to_message(item), adapt_legacy_to_message(item)
    assert first.id == second.id == legacy_message_uuid("Q-77")
    assert first.id != uuid.UUID(int=0)
    assert adapt_message_to_legacy(first, now=first.created_at).id == "Q-77"


def test_a_completed_item_is_delivered_at_its_last_update_or_after_its_actual_wait() -> None:
    done = msgspec.structs.replace(appendix_a(), status=LegacyStatus.completed)
    assert adapt_legacy_to_message(done).delivered_at == done.updatedAt
    timed = msgspec.structs.replace(done, actualWaitTime=30)
    assert adapt_legacy_to_message(timed).delivered_at == done.createdAt + timedelta(minutes=30)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
legacy_items = st.builds(
    QueueItem,
    id=st.one_of(st.uuids().map(str), st.text(alphabet="ABCQ-0123456789", min_size=1, max_size=12)),
    customerId=st.text(alphabet="abcXYZ-_0123456789", max_size=30),
    customerName=text,
    customerEmail=st.from_regex(r"\A[a-z0-9.]{1,10}@[a-z]{1,10}\.(com|org|net)\Z"),
    customerPhone=text,
    serviceType=st.text(alphabet="abc-xyz", max_size=20),
    priority=st.integers(0, 10),
    status=st.sampled_from(LegacyStatus),
    notes=text,
    estimatedWaitTime=st.integers(0, 100_000),
    actualWaitTime=st.none() | st.integers(0, 10_000),
    createdAt=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),
    updatedAt=st.none() | st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(UTC)),
    notificationsSent=st.lists(st.sampled_from(["email", "sms", {"kind": "push"}]), max_size=3),
)


@given(legacy_items)
def test_any_legacy_item_survives_the_round_trip_through_the_new_model(item: QueueItem) -> None:
    message = validated(adapt_legacy_to_message(item))
    assert adapt_message_to_legacy(message, now=message.created_at) == item


@pytest.mark.parametrize("status", list(LegacyStatus))
def test_legacy_statuses_survive_the_round_trip(status: LegacyStatus) -> None:
    item = msgspec.structs.replace(appendix_a(), status=status)
    message = adapt_legacy_to_message(item)
    assert message.status is LEGACY_TO_STATUS[status]
    assert adapt_message_to_legacy(message, now=message.created_at).status is status
