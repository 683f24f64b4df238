"""The one event the log stores, whatever MTA wrote it, and what an MTA's event source must do.

Each MTA's adapter decodes its own wire records into ``LogEvent`` (``EventSource.decode``) for the
acknowledgement path, and derives ``EventFacts`` from a stored event (``EventSource.facts``) for the projections.
The control plane handles only these two types and the registry in ``adapters.sources``: it never reads an MTA's
record itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from adapters.model.observation import MessageObservation


def storable_text(text: str) -> str:
    """Postgres text cannot hold NUL; the one change made to a kept payload is writing it as the escape \\u0000."""
    return text.replace("\x00", "\\u0000")


class LogEvent(msgspec.Struct, kw_only=True):
    """One MTA log record as the event log keeps it.

    ``dedupe_key`` is the record's identity (the same record posted twice has the same key); ``event_at`` is when
    it happened. The columns beside ``payload`` are what the log is searched by; the record itself is ``payload``,
    verbatim (the one change: NUL written as the escape \\u0000, which the databases can store).
    The record's effect on its message (``MessageObservation``) is not computed on the acknowledgement path: the
    projections derive it from ``payload`` (``EventSource.facts``).
    """

    source: str
    type: str
    dedupe_key: bytes
    event_at: datetime
    message_uuid: uuid.UUID | None
    mta_message_id: str
    recipient: str
    sender: str
    queue_name: str
    domain: str
    tenant_id: str | None
    campaign_id: str | None
    response_code: int | None
    payload: str


class EventFacts(msgspec.Struct, kw_only=True):
    """What the projections need from one stored event, beyond its columns."""

    observation: MessageObservation | None
    egress_source: str | None = None
    egress_pool: str | None = None
    node: str | None = None
    bounce_class: str | None = None  # the MTA's own classification (KumoMTA: InvalidRecipient, …)
    delivery_seconds: float | None = None  # for a delivery: how long after reception
    # A complaint (an ARF report, KumoMTA's Feedback record): the addresses complained about, the report's
    # feedback type (``abuse``, ``fraud``, …) and the tenant of the message reported, when the report says
    complaint_recipients: tuple[str, ...] = ()
    feedback_type: str | None = None
    complaint_tenant: str | None = None


class EventSource(Protocol):
    """An MTA's log records: how to split a posted body, decode one record, and read a stored one again."""

    name: str  # the events' ``source`` and the ingest route's last segment
    title: str  # for people: "KumoMTA"
    record_types: tuple[str, ...]
    # The record types saying a message was received (queued) and delivered: the metrics' windows count them.
    received_types: tuple[str, ...]
    delivered_types: tuple[str, ...]
    # The delivery attempts' outcomes domain health and the throttling rules weigh: refused for good by the
    # receiver, deferred by it, and complaints about a delivered message (each counted once per attempt).
    bounced_types: tuple[str, ...]
    deferred_types: tuple[str, ...]
    complaint_types: tuple[str, ...]
    record_schema: dict[str, Any]  # JSON Schema of one record, for the API description
    # JSON Schema of the one record an application/x-www-form-urlencoded body holds, for a source that takes
    # such bodies too (ZoneMTA's core/http-bounce posts one); None: JSON bodies only.
    form_schema: dict[str, Any] | None

    def split(self, body: bytes, content_type: str) -> Sequence[bytes]:
        """The raw records of a posted body, each a JSON document (raises ``msgspec.DecodeError`` when the body
        cannot be read at all). ``content_type`` is the request's media type, lower case, without parameters."""
        ...

    def decode(self, raw: bytes) -> list[LogEvent]:
        """One raw record -> the events to append (one, or one per recipient of a record listing several),
        validated: raises ``ValueError``/``msgspec`` errors naming the field at fault, for the whole record."""
        ...

    def facts(self, payload: str, recipient: str) -> EventFacts:
        """A stored event's payload and recipient -> what projections need (raises if it no longer decodes)."""
        ...
