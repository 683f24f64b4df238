"""What one MTA event says about one message, and how observations combine into the mirrored state.

Events arrive late, twice, and out of order. ``merge`` is commutative and associative, so the mirrored row is the
same whatever order and batching the events come in:

* status (and the queue the message is in, and when it is next tried): the observation ranking highest by
  (terminal?, event time, status) wins. A terminal outcome beats any in-queue state whatever their times, so a
  late TransientFailure never undoes a Delivery; between terminal outcomes the later one wins (an OOB bounce
  received after the delivery).
* ``smtp_response``, ``pool_name``, ``delivery_protocol``: from the latest observation carrying a response.
* ``last_bounce_reason``, ``bounce_classification``: from the latest failure.
* counters and times: ``num_attempts`` and ``size_bytes`` take the maximum, ``last_attempt_at`` the latest,
  ``created_at`` and ``delivered_at`` the earliest.

The SQL upsert in ``controlplane.db.mirror`` applies the same rules between a stored row and a new observation.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import msgspec

from adapters.model.lifecycle import TERMINAL_STATUSES
from adapters.model.queue import BounceType, MessageQueueItem, MessageQueueStatus, SmtpResponse

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The metadata key under which an observation keeps its message's id at the MTA, where that differs from the
# Message-ID header (``message_id``) and per-message operations need it (ZoneMTA's queue id).
MTA_MESSAGE_ID = "mta_message_id"


class MessageObservation(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    message_id: str
    queue_name: str
    recipient: str
    sender: str
    domain: str
    routing_domain: str | None = None
    campaign_id: str | None = None
    tenant_id: str | None = None
    status: MessageQueueStatus
    status_at: datetime
    size_bytes: int = 0
    num_attempts: int = 0
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    response_at: datetime | None = None
    smtp_response: SmtpResponse | None = None
    pool_name: str | None = None
    delivery_protocol: str | None = None
    failure_at: datetime | None = None
    last_bounce_reason: str | None = None
    bounce_classification: BounceType | None = None
    headers: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None

    def status_rank(self) -> tuple[bool, datetime, str, str, datetime]:
        # status, queue and next attempt break ties between events logged in the same instant, so the winner never
        # depends on which arrived first
        return (
            self.status in TERMINAL_STATUSES,
            self.status_at,
            self.status.value,
            self.queue_name,
            self.next_attempt_at or EPOCH,
        )


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


def _failure_rank(observation: MessageObservation) -> tuple[datetime, str]:
    return (observation.failure_at or EPOCH, observation.last_bounce_reason or "")


def merge(a: MessageObservation, b: MessageObservation) -> MessageObservation:
    """Combine two observations of the same message (see the module docstring for the rules)."""
    winner, other = (a, b) if a.status_rank() >= b.status_rank() else (b, a)
    responder, quiet = (a, b) if (a.response_at or EPOCH) >= (b.response_at or EPOCH) else (b, a)
    failed = (
        a
        if (a.failure_at or EPOCH, a.last_bounce_reason or "") >= (b.failure_at or EPOCH, b.last_bounce_reason or "")
        else b
    )
    return MessageObservation(
        id=winner.id,
        message_id=winner.message_id,
        queue_name=winner.queue_name,
        recipient=winner.recipient,
        sender=winner.sender,
        domain=winner.domain,
        routing_domain=winner.routing_domain,
        campaign_id=winner.campaign_id,
        tenant_id=winner.tenant_id,
        status=winner.status,
        status_at=winner.status_at,
        size_bytes=max(a.size_bytes, b.size_bytes),
        num_attempts=max(a.num_attempts, b.num_attempts),
        last_attempt_at=_latest(a.last_attempt_at, b.last_attempt_at),
        next_attempt_at=winner.next_attempt_at,
        created_at=min(a.created_at, b.created_at),
        delivered_at=_earliest(a.delivered_at, b.delivered_at),
        response_at=_latest(a.response_at, b.response_at),
        smtp_response=responder.smtp_response if responder.response_at else quiet.smtp_response,
        pool_name=responder.pool_name or quiet.pool_name,
        delivery_protocol=responder.delivery_protocol or quiet.delivery_protocol,
        failure_at=_latest(a.failure_at, b.failure_at),
        last_bounce_reason=failed.last_bounce_reason,
        bounce_classification=failed.bounce_classification,
        headers=winner.headers if winner.headers is not None else other.headers,
        metadata=winner.metadata if winner.metadata is not None else other.metadata,
    )


# The fields of MessageQueueItem an observation sets, with the model's own types (and so its Meta rules: address
# patterns, lengths, non-negative counters, timezone-aware times), for checking what ingestion would write.
_MODEL_TYPES = {f.name: f.type for f in msgspec.structs.fields(MessageQueueItem)}
_CHECKED_FIELDS = (
    "message_id",
    "queue_name",
    "recipient",
    "sender",
    "domain",
    "routing_domain",
    "campaign_id",
    "tenant_id",
    "pool_name",
    "size_bytes",
    "num_attempts",
    "last_attempt_at",
    "next_attempt_at",
    "created_at",
    "delivered_at",
    "smtp_response",
    "delivery_protocol",
    "last_bounce_reason",
    "bounce_classification",
    "headers",
)
_ObservedItem: Any = msgspec.defstruct(
    "ObservedMessageQueueItem", [(name, _MODEL_TYPES[name]) for name in _CHECKED_FIELDS], kw_only=True
)
# The same fields as an array: about half the cost to check, used first; the named form only words the error.
_ObservedRow: Any = msgspec.defstruct(
    "ObservedMessageQueueRow", [(name, _MODEL_TYPES[name]) for name in _CHECKED_FIELDS], array_like=True
)
_observed_values = attrgetter(*_CHECKED_FIELDS)
_SMTP_RESPONSE = _CHECKED_FIELDS.index("smtp_response")


def check_against_model(observation: MessageObservation) -> None:
    """Raise ``msgspec.ValidationError`` (naming the field) when the row this observation would write breaks a
    rule of ``MessageQueueItem``: the API would otherwise serve a message the model forbids."""
    values = list(_observed_values(observation))
    if observation.smtp_response is not None:  # convert passes Struct instances through unchecked
        values[_SMTP_RESPONSE] = msgspec.to_builtins(observation.smtp_response, builtin_types=(datetime,))
    try:
        msgspec.convert(values, _ObservedRow)
    except msgspec.ValidationError:
        msgspec.convert(dict(zip(_CHECKED_FIELDS, values, strict=True)), _ObservedItem)
        raise
