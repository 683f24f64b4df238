"""Wire types of the events API."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class RejectedRecord(msgspec.Struct, kw_only=True):
    index: int
    error: str


class IngestResult(msgspec.Struct, kw_only=True):
    """``accepted`` records are durable (committed, or spooled to local disk while the database is away);
    ``duplicates`` were already stored; ``rejected`` ones (undecodable, breaking a rule, about another tenant's
    message, or refused by the database) are kept as dead letters. The three always add up to the records sent."""

    accepted: int
    duplicates: int
    rejected: list[RejectedRecord]
    spooled: int = 0


class StoredEvent(msgspec.Struct, kw_only=True):
    event_at: datetime
    received_at: datetime
    source: str
    type: str
    message: uuid.UUID | None
    mta_message_id: str
    recipient: str
    sender: str
    queue_name: str
    domain: str
    tenant_id: str | None
    campaign_id: str | None
    response_code: int | None
    record: msgspec.Raw  # the MTA's record, verbatim


class EventPage(msgspec.Struct, kw_only=True):
    data: list[StoredEvent]
    cursor: str | None
    has_more: bool


class DeadLetter(msgspec.Struct, kw_only=True):
    id: int
    received_at: datetime
    source: str
    error: str
    payload: str
    api_key: str | None


class DeadLetterPage(msgspec.Struct, kw_only=True):
    data: list[DeadLetter]
    cursor: str | None
    has_more: bool
