"""Wire types of the suppression API."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta


class SuppressionReason(enum.StrEnum):
    hard_bounce = "hard_bounce"
    soft_bounce = "soft_bounce"
    complaint = "complaint"
    unsubscribe = "unsubscribe"
    manual = "manual"


# The model's address rule (adapters.model.EMAIL_PATTERN) without NUL, which no API input may hold.
EMAIL_RULE = r"^[^\s@<>\u0000]{1,64}@[^\s@<>\u0000]{1,255}$"
SuppressionEmail = Annotated[str, Meta(pattern=EMAIL_RULE, max_length=320, description="An e-mail address")]
TenantId = Annotated[str, Meta(min_length=1, max_length=100)]


class SuppressionCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new entry. Without ``tenant_id`` it is global (an unbound key only); a tenant-bound key's entries are its
    tenant's. ``expires_at``: when it stops applying (none: permanent; soft bounces default to
    MTACTL_SOFT_BOUNCE_SUPPRESS_DAYS)."""

    email: SuppressionEmail
    reason: SuppressionReason = SuppressionReason.manual
    tenant_id: TenantId | None = None
    expires_at: datetime | None = None
    note: Annotated[str, Meta(max_length=500)] | None = None


class Suppression(msgspec.Struct, kw_only=True):
    """One entry. ``source_event_id``: the identity (hex) of the logged event that caused an automatic entry."""

    email: str
    reason: SuppressionReason
    tenant_id: str | None
    created_at: datetime
    expires_at: datetime | None
    source_event_id: str | None
    created_by: str
    note: str | None = None


class SuppressionDetail(msgspec.Struct, kw_only=True):
    """An address's entry (the global one first, else its tenant's) with what enforcing it did: the queued
    messages cancelled by an operation (``cancel_operation_id``), those no MTA could cancel one by one and are
    listed instead (``held_messages``, mirrored message ids), and the nodes whose own list carries it."""

    email: str
    reason: SuppressionReason
    tenant_id: str | None
    created_at: datetime
    expires_at: datetime | None
    source_event_id: str | None
    created_by: str
    note: str | None
    entries: list[Suppression]
    held_messages: list[uuid.UUID]
    cancel_operation_id: uuid.UUID | None
    pushed_to: list[str]


class SuppressionPage(msgspec.Struct, kw_only=True):
    data: list[Suppression]
    cursor: str | None
    has_more: bool


class SuppressionRemoval(msgspec.Struct, kw_only=True):
    """What a removal took off the list, and the held messages (still queued) it released."""

    removed: list[Suppression]
    released_messages: list[uuid.UUID]


class SuppressionStats(msgspec.Struct, kw_only=True):
    """Entries in force: in all, by reason, global and per tenant; plus those expiring or created within a day."""

    total: int
    by_reason: dict[str, int]
    global_entries: int
    tenant_entries: int
    expiring_within_24h: int
    created_last_24h: int


class RejectedRow(msgspec.Struct, kw_only=True):
    row: int  # 1 = the first line of the file (the header, if any)
    field: str
    message: str


class ImportReport(msgspec.Struct, kw_only=True):
    """An import: good rows kept, bad ones reported with their row number and field."""

    rows: int
    added: int
    already_present: int
    rejected: list[RejectedRow]
