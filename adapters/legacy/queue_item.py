"""Legacy ``QueueItem`` <-> ``MessageQueueItem``.

Decisions where seed 000 leaves things open (also in the README, "Legacy model"):

* Nothing is lost going legacy -> new. Fields the new model has no place for (``customerPhone``, ``updatedAt``,
  ``notificationsSent``, ``estimatedWaitTime``, ``actualWaitTime``, ``serviceType`` and a non-UUID ``id``) are kept
  under ``metadata["legacy"]``; ``customerName`` goes to ``metadata["customer_name"]`` and ``notes`` to
  ``metadata["notes"]``, the keys the seed's own adapter reads. So new -> legacy restores the original item exactly,
  which is what ``mtactl legacy verify`` checks.
* A legacy id that is not a UUID becomes a UUIDv5 of it, so re-importing the same item yields the same row.
* ``estimatedWaitTime`` (minutes) becomes ``next_attempt_at = createdAt + estimatedWaitTime``; the reverse
  computes minutes from ``now`` as the seed does, never below zero.
* The new model requires a sender and an SMTP Message-ID, which legacy items lack: the sender is the null sender
  ("") unless the importer is given one, and the Message-ID is ``<legacy.{id}@mtactl.invalid>`` (``.invalid`` is
  reserved, RFC 2606, so it can never collide with a real one).
* ``completed`` items get ``delivered_at`` from ``actualWaitTime`` when present, else from ``updatedAt``.
* The queue name uses KumoMTA's grammar (``campaign:tenant@domain``), so imported messages group with live ones.
* New -> legacy status: as in the seed's ``adaptStatus``; ``suspended`` and ``deferred`` (still queued, waiting
  for a retry) read as ``waiting``. Legacy -> new: the four direct mappings of table 3.2.
"""

from __future__ import annotations

import enum
import functools
import math
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from adapters.model.queue import (
    EmailAddress,
    MessageQueueItem,
    MessageQueueStatus,
    Priority,
    QueueMetrics,
    QueueState,
    Timestamp,
    recipient_domain,
)
from adapters.model.queue_name import QueueName

# Fixed namespace so non-UUID legacy ids map to the same UUID on every run and every machine.
LEGACY_ID_NAMESPACE = uuid.UUID("6f1d7a52-2c38-4c59-9a51-7e1b1b0c9d10")
DEFAULT_MAX_ATTEMPTS = 20
DEFAULT_PRIORITY = 5


class LegacyStatus(enum.StrEnum):
    waiting = "waiting"
    in_progress = "in-progress"
    completed = "completed"
    cancelled = "cancelled"


class QueueItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The legacy customer-service queue item, as the old API spoke it (camelCase on the wire)."""

    id: Annotated[str, Meta(min_length=1, max_length=255)]
    customerId: str = ""
    customerName: str = ""
    customerEmail: EmailAddress
    customerPhone: str = ""
    serviceType: str = ""
    priority: Priority = DEFAULT_PRIORITY
    status: LegacyStatus
    notes: str = ""
    estimatedWaitTime: Annotated[int, Meta(ge=0)] = 0
    actualWaitTime: Annotated[int, Meta(ge=0)] | None = None
    createdAt: Timestamp
    updatedAt: Timestamp | None = None
    notificationsSent: list[Any] = msgspec.field(default_factory=list)


class LegacyQueueMetrics(msgspec.Struct, kw_only=True):
    """The legacy metrics view (seed 000 table 3.3)."""

    totalWaiting: int
    averageWaitTime: float
    longestWaitTime: float
    serviceUtilization: float
    customersServedToday: int


LEGACY_TO_STATUS: dict[LegacyStatus, MessageQueueStatus] = {
    LegacyStatus.waiting: MessageQueueStatus.ready,
    LegacyStatus.in_progress: MessageQueueStatus.in_delivery,
    LegacyStatus.completed: MessageQueueStatus.delivered,
    LegacyStatus.cancelled: MessageQueueStatus.cancelled,
}

STATUS_TO_LEGACY: dict[MessageQueueStatus, LegacyStatus] = {
    MessageQueueStatus.scheduled: LegacyStatus.waiting,
    MessageQueueStatus.ready: LegacyStatus.waiting,
    MessageQueueStatus.suspended: LegacyStatus.waiting,
    MessageQueueStatus.deferred: LegacyStatus.waiting,
    MessageQueueStatus.in_delivery: LegacyStatus.in_progress,
    MessageQueueStatus.delivered: LegacyStatus.completed,
    MessageQueueStatus.cancelled: LegacyStatus.cancelled,
    MessageQueueStatus.bounced: LegacyStatus.cancelled,
    MessageQueueStatus.expired: LegacyStatus.cancelled,
}


@functools.lru_cache(maxsize=1 << 16)
def legacy_message_uuid(legacy_id: str) -> uuid.UUID:
    """The message UUID a legacy id maps to: itself when it is a UUID, else a stable UUIDv5 of it.

    Cached, and a string too short to hold 32 hex digits is not even tried as a UUID: the importer asks twice per
    row, and the failed parse (an exception) was a sixth of a legacy import's time in the profile."""
    if len(legacy_id) >= 32:
        try:
            return uuid.UUID(legacy_id)
        except ValueError:
            pass
    return uuid.uuid5(LEGACY_ID_NAMESPACE, legacy_id)


def adapt_legacy_to_message(item: QueueItem, *, sender: str = "") -> MessageQueueItem:
    """Map a legacy item onto the new model, keeping every legacy field somewhere (see module docstring)."""
    message_uuid = legacy_message_uuid(item.id)
    legacy: dict[str, Any] = {}
    if str(message_uuid) != item.id:
        legacy["id"] = item.id
    if item.customerPhone:
        legacy["customerPhone"] = item.customerPhone
    if item.serviceType:
        legacy["serviceType"] = item.serviceType
    if item.updatedAt is not None:
        legacy["updatedAt"] = item.updatedAt.isoformat()
    if item.notificationsSent:
        legacy["notificationsSent"] = item.notificationsSent
    if item.actualWaitTime is not None:
        legacy["actualWaitTime"] = item.actualWaitTime

    # "legacy" is always present on imported messages: it marks their origin for the reverse mapping.
    metadata: dict[str, Any] = {"legacy": legacy}
    if item.notes:
        metadata["notes"] = item.notes
    if item.customerName:
        metadata["customer_name"] = item.customerName

    status = LEGACY_TO_STATUS[item.status]
    delivered_at: datetime | None = None
    if status is MessageQueueStatus.delivered:
        if item.actualWaitTime is not None:
            delivered_at = item.createdAt + timedelta(minutes=item.actualWaitTime)
        else:
            delivered_at = item.updatedAt
    domain = recipient_domain(item.customerEmail)
    tenant = item.customerId or None
    campaign = item.serviceType or None
    return MessageQueueItem(
        id=message_uuid,
        message_id=f"<legacy.{message_uuid.hex}@mtactl.invalid>",
        queue_name=QueueName(domain=domain, campaign=campaign, tenant=tenant).format(),
        recipient=item.customerEmail,
        sender=sender,
        domain=domain,
        campaign_id=campaign,
        tenant_id=tenant,
        status=status,
        queue_state=QueueState.active,
        priority=item.priority,
        size_bytes=0,
        num_attempts=0,
        max_attempts=DEFAULT_MAX_ATTEMPTS,
        next_attempt_at=item.createdAt + timedelta(minutes=item.estimatedWaitTime),
        created_at=item.createdAt,
        delivered_at=delivered_at,
        metadata=metadata,
    )


def adapt_message_to_legacy(message: MessageQueueItem, *, now: datetime) -> QueueItem:
    """Present a message in the legacy shape (the seed's ``adaptMessageToLegacyQueue``).

    A message imported from a legacy item carries ``metadata["legacy"]``; for it the preserved values win over the
    seed's display defaults ("N/A", "email"), so ``now=message.created_at`` restores the original item exactly.
    """
    metadata = message.metadata or {}
    preserved = metadata.get("legacy")
    from_legacy = isinstance(preserved, dict)
    legacy: dict[str, Any] = preserved if isinstance(preserved, dict) else {}
    wait_minutes = 0
    if message.next_attempt_at is not None:
        wait_minutes = max(0, math.ceil((message.next_attempt_at - now).total_seconds() / 60))
    updated_at: datetime | None = message.created_at  # the seed's fallback
    actual_wait: int | None = None
    if from_legacy:
        raw_updated = legacy.get("updatedAt")
        updated_at = datetime.fromisoformat(raw_updated) if isinstance(raw_updated, str) else None
        raw_actual = legacy.get("actualWaitTime")
        actual_wait = raw_actual if isinstance(raw_actual, int) else None
    elif message.delivered_at is not None:
        actual_wait = max(0, round((message.delivered_at - message.created_at).total_seconds() / 60))
    return QueueItem(
        id=str(legacy.get("id", message.id)),
        customerId=message.tenant_id or "",
        customerName=str(metadata.get("customer_name", "" if from_legacy else "N/A")),
        customerEmail=message.recipient,
        customerPhone=str(legacy.get("customerPhone", "")),
        serviceType=str(legacy.get("serviceType", "" if from_legacy else message.campaign_id or "email")),
        priority=message.priority,
        status=STATUS_TO_LEGACY[message.status],
        notes=str(metadata.get("notes", "")),
        estimatedWaitTime=wait_minutes,
        actualWaitTime=actual_wait,
        createdAt=message.created_at,
        updatedAt=updated_at,
        notificationsSent=list(legacy.get("notificationsSent", [])),
    )


def adapt_metrics_to_legacy(metrics: QueueMetrics) -> LegacyQueueMetrics:
    """Seed 000 table 3.3."""
    return LegacyQueueMetrics(
        totalWaiting=metrics.messages_by_status.get(MessageQueueStatus.ready, 0),
        averageWaitTime=metrics.average_queue_time,
        longestWaitTime=metrics.oldest_message_age,
        serviceUtilization=metrics.delivery_rate,
        customersServedToday=metrics.messages_last_24h,
    )
