"""Wire types of the email queue model (seed 000 §1-2), as msgspec Structs.

Validation lives in the types themselves (``Meta`` constraints), so every decoder (HTTP bodies, the legacy
importer, adapters) enforces the same rules: e-mail addresses, priority 0-10, timezone-aware ISO timestamps and
enum values.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

# Deliberately permissive: one "@", no whitespace or angle brackets, bounded length. SMTPUTF8 allows non-ASCII
# local parts and domains, so a strict RFC 5322 grammar would reject real addresses.
EMAIL_PATTERN = r"^[^\s@<>]{1,64}@[^\s@<>]{1,255}$"

EmailAddress = Annotated[str, Meta(pattern=EMAIL_PATTERN, max_length=320, description="An e-mail address")]
# The envelope sender may be the null reverse-path "<>" (bounces, DSNs), which arrives as an empty string.
EnvelopeSender = Annotated[
    str,
    Meta(pattern=EMAIL_PATTERN + "|^$", max_length=320, description="Envelope sender; empty for the null sender"),
]
Timestamp = Annotated[datetime, Meta(tz=True, description="ISO-8601 timestamp with a timezone")]
Priority = Annotated[int, Meta(ge=0, le=10, description="Delivery priority, 0-10, higher is more urgent")]
NonNegative = Annotated[int, Meta(ge=0)]
Name = Annotated[str, Meta(min_length=1, max_length=255)]
ShortName = Annotated[str, Meta(min_length=1, max_length=100)]


class MessageQueueStatus(enum.StrEnum):
    """Lifecycle state of one message."""

    scheduled = "scheduled"
    ready = "ready"
    in_delivery = "in_delivery"
    suspended = "suspended"
    deferred = "deferred"
    bounced = "bounced"
    delivered = "delivered"
    expired = "expired"
    cancelled = "cancelled"


class QueueState(enum.StrEnum):
    """Operational state of a whole queue."""

    active = "active"
    suspended = "suspended"
    draining = "draining"
    disabled = "disabled"


class BounceType(enum.StrEnum):
    hard = "hard"
    soft = "soft"
    block = "block"
    complaint = "complaint"
    unknown = "unknown"


class QueueSortField(enum.StrEnum):
    created_at = "created_at"
    scheduled_at = "scheduled_at"
    priority = "priority"
    num_attempts = "num_attempts"
    size_bytes = "size_bytes"
    recipient = "recipient"
    domain = "domain"


class QueueOperationType(enum.StrEnum):
    suspend = "suspend"
    resume = "resume"
    rebind = "rebind"
    bounce = "bounce"
    retry = "retry"
    cancel = "cancel"
    purge = "purge"
    set_priority = "set_priority"


SortOrder = Literal["asc", "desc"]
_T = TypeVar("_T")


class SmtpResponse(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    code: Annotated[int, Meta(ge=100, le=599)]
    message: str
    enhanced_code: Annotated[str, Meta(pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")] | None = None
    timestamp: Timestamp


class MessageQueueItem(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One e-mail message in an MTA queue: the 31 fields of seed 000 §1.1."""

    # Core identifiers
    id: uuid.UUID
    message_id: Annotated[str, Meta(min_length=1, max_length=998)]
    queue_name: Name
    # Routing
    recipient: EmailAddress
    sender: EnvelopeSender
    domain: Name
    routing_domain: Name | None = None
    # Campaign & organisation
    campaign_id: ShortName | None = None
    tenant_id: ShortName | None = None
    pool_name: ShortName | None = None
    # Queue state
    status: MessageQueueStatus
    queue_state: QueueState
    priority: Priority
    # Delivery metadata
    size_bytes: NonNegative
    num_attempts: NonNegative
    max_attempts: Annotated[int, Meta(ge=1)]
    last_attempt_at: Timestamp | None = None
    next_attempt_at: Timestamp | None = None
    # Errors
    last_bounce_reason: str | None = None
    bounce_classification: BounceType | None = None
    # Timestamps
    created_at: Timestamp
    scheduled_at: Timestamp | None = None
    delivered_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    # Response tracking
    smtp_response: SmtpResponse | None = None
    delivery_protocol: Literal["smtp", "http"] | None = None
    # Headers & content references
    headers: dict[str, str] | None = None
    body_hash: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")] | None = None
    attachment_count: NonNegative | None = None
    # Custom metadata
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


class DomainHealthScore(msgspec.Struct, kw_only=True, omit_defaults=True):
    domain: str
    score: Annotated[float, Meta(ge=0, le=100)]
    bounce_rate: float
    average_delivery_time: float
    last_successful_delivery: Timestamp | None = None
    throttle_rate: float | None = None


class QueueMetrics(msgspec.Struct, kw_only=True):
    """Aggregates over the mirrored queue (seed 000 §2.1). Rates are percentages, times are seconds."""

    total_messages: int
    messages_by_status: dict[MessageQueueStatus, int]
    average_queue_time: float
    average_delivery_time: float
    delivery_rate: float
    queue_depth: int
    queue_depth_by_domain: dict[str, int]
    queue_depth_by_campaign: dict[str, int]
    total_retries: int
    retry_rate: float
    bounce_rate: float
    bounces_by_type: dict[BounceType, int]
    domain_health_scores: dict[str, DomainHealthScore]
    messages_last_hour: int
    messages_last_24h: int
    messages_last_7d: int
    total_size_bytes: int
    oldest_message_age: float
    newest_message_age: float


class QueueFilter(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Search criteria over the queue (seed 000 §2.2). List-or-scalar fields accept either form."""

    status: MessageQueueStatus | list[MessageQueueStatus] | None = None
    queue_state: QueueState | list[QueueState] | None = None
    domain: str | None = None
    domains: list[str] | None = None
    sender: str | None = None
    recipient: str | None = None
    routing_domain: str | None = None
    campaign_id: str | None = None
    tenant_id: str | None = None
    pool_name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None
    search_query: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    tags: list[str] | None = None
    min_attempts: NonNegative | None = None
    max_attempts: NonNegative | None = None
    bounce_type: BounceType | None = None
    min_size_bytes: NonNegative | None = None
    max_size_bytes: NonNegative | None = None
    priority: Priority | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 50
    offset: NonNegative | None = None
    sort_by: QueueSortField | None = None
    sort_order: SortOrder = "desc"

    def statuses(self) -> list[MessageQueueStatus]:
        return _as_list(self.status)

    def queue_states(self) -> list[QueueState]:
        return _as_list(self.queue_state)

    def effective_sort_by(self) -> QueueSortField:
        """``sort_by`` when given; otherwise the column of a range filter, else ``created_at``.

        A range filter and the sort served by one index: "size at least 1 MB" sorted by size reads only the
        matching end of the size index, whereas sorted by creation time it may have to walk the whole table to
        find the few matches. Creation time wins when it is itself filtered.
        """
        if self.sort_by is not None:
            return self.sort_by
        ranges = [
            (QueueSortField.created_at, (self.created_after, self.created_before)),
            (QueueSortField.scheduled_at, (self.scheduled_after, self.scheduled_before)),
            (QueueSortField.size_bytes, (self.min_size_bytes, self.max_size_bytes)),
            (QueueSortField.num_attempts, (self.min_attempts, self.max_attempts)),
        ]
        for field, bounds in ranges:
            if any(bound is not None for bound in bounds):
                return field
        return QueueSortField.created_at

    def all_domains(self) -> list[str]:
        """``domain`` and ``domains`` together, lower-cased (domains are case-insensitive)."""
        found = ([self.domain] if self.domain else []) + (self.domains or [])
        return sorted({d.lower() for d in found})


def _as_list(value: _T | list[_T] | None) -> list[_T]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class QueueOperation(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    operation: QueueOperationType
    queue_name: str | None = None
    message_ids: list[str] | None = None
    reason: str | None = None
    metadata: dict[str, Any] | None = None


class QueueOperationResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    success: bool
    operation: QueueOperationType
    affected_messages: int
    affected_queues: list[str]
    errors: list[str] | None = None
    timestamp: Timestamp


def header(headers: dict[str, str] | None, name: str) -> str | None:
    """A header's value by case-insensitive name (header names are case-insensitive, RFC 5322)."""
    if not headers:
        return None
    exact = headers.get(name)  # the usual spelling first: a dict lookup instead of a scan of every header
    if exact is not None:
        return exact
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def assume_utc(value: datetime) -> datetime:
    """Timestamps given without an offset in queries are read as UTC: it is what operators type."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def normalize_address(address: str) -> str:
    """Domains are case-insensitive, local parts are not (RFC 5321 §2.4): lower-case only the domain."""
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}" if at else address


def recipient_domain(address: str) -> str:
    """The domain part of an address, lower-cased: the key queues are grouped by."""
    return address.rpartition("@")[2].lower()


_StructT = TypeVar("_StructT", bound=msgspec.Struct)


def validated(value: _StructT) -> _StructT:
    """Check a Struct built in code against its declared constraints.

    msgspec enforces ``Meta`` constraints only when decoding, so values built by a mapping function go through one
    encode/decode round trip before they are stored. Raises ``msgspec.ValidationError`` naming the field.
    """
    return msgspec.convert(msgspec.to_builtins(value), type(value))
