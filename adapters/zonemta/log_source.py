"""ZoneMTA's log entries (and core/http-bounce's body) as the neutral ``LogEvent``: the event source the control
plane ingests through, at ``POST /api/v1/events/ingest/zonemta``.

A body is a JSON array of log entries, or one entry, each exactly as ZoneMTA made it, possibly with one key added
by mtactl's log:entry plugin: ``"_mtactl": {"node": "<node name>", "at": <ms since the epoch when the hook
fired>}``. Entries without it (from a relay of ZoneMTA's UDP remote log, say) are taken too. A body of
``application/x-www-form-urlencoded`` (that does not start as JSON does) is one core/http-bounce report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from adapters.model import recipient_domain
from adapters.model.events import EventFacts, LogEvent
from adapters.model.observation import check_against_model
from adapters.model.records import check_nesting, escape_nul, split_body
from adapters.zonemta.events import (
    FORM_MEDIA_TYPE,
    Action,
    Entry,
    HttpBounce,
    LogEntry,
    bounce_decoder,
    entry_decoder,
    form_record,
    http_bounce_parts,
    is_http_bounce,
    log_entry_parts,
)
from adapters.zonemta.mapping import FAILURE_KINDS, admit, dedupe_key, observe, response_code


def _without_nul(value: Any) -> Any:
    """The decoded record with every NUL in its strings written as the six characters \\u0000."""
    return msgspec.convert(escape_nul(msgspec.to_builtins(value)), type(value))


def parse(raw: bytes) -> tuple[str, list[Entry]]:
    """The storable payload text and the record's entries, one per recipient (NUL escaped); raises on any
    fault, naming the field."""
    check_nesting(raw)
    bounce = b'"form"' in raw and is_http_bounce(raw)  # the mark is only looked for when it may be there
    entry: LogEntry | HttpBounce = bounce_decoder.decode(raw) if bounce else entry_decoder.decode(raw)
    payload = raw.decode()  # decoded above, so UTF-8 JSON; a NUL in it can only be the escape \u0000
    if "\\u0000" in payload:
        entry = _without_nul(entry)
    if isinstance(entry, HttpBounce):
        return payload, http_bounce_parts(entry)
    return payload, log_entry_parts(entry)


_STRING = {"type": "string"}
_MS = {"type": "integer", "description": "ms since the epoch"}
MTACTL_NOTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Added by mtactl's log:entry plugin (absent from entries relayed as ZoneMTA made them)",
    "properties": {
        "node": {"type": "string", "description": "the ZoneMTA node's name"},
        "at": {"type": "integer", "description": "when the log:entry hook fired, in ms since the epoch"},
    },
}
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ZoneLogEntry",
    "description": "A ZoneMTA log entry (what remotelog hands to log:entry hooks), plus mtactl's `_mtactl`. `id` "
    "is the queue id (null in a QUEUE_POLL that found nothing). Fields beyond these are accepted and stored "
    "verbatim.",
    "required": ["id", "action"],
    "properties": {
        "id": {"type": "string", "examples": ["18b0879811a00009a2"]},
        "action": {"type": "string", "examples": ["ACCEPTED"]},
        "seq": {"type": "string", "description": "the delivery (one recipient): 001, 002, …"},
        "to": {"type": "string", "description": "the recipient; QUEUED: every recipient, comma-separated"},
        "recipient": _STRING,
        "from": _STRING,
        "returnPath": _STRING,
        "zone": _STRING,
        "category": {"type": "string", "description": "the bounce category (DEFERRED, REJECTED)"},
        "defcount": {"type": "integer"},
        "nextattempt": _MS,
        "response": _STRING,
        "size": {"type": "integer"},
        "body": {"type": "integer"},
        "messageId": _STRING,
        "message-id": _STRING,
        "subject": _STRING,
        "protocol": _STRING,
        "reason": _STRING,
        "_mtactl": MTACTL_NOTE_SCHEMA,
    },
    "additionalProperties": True,
}
FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ZoneHttpBounce",
    "description": "What ZoneMTA's core/http-bounce plugin posts for one bounce (every value text).",
    "required": ["id", "to", "time"],
    "properties": {
        "id": {"type": "string", "examples": ["18b0879811a00009b7"]},
        "sessionId": _STRING,
        "to": _STRING,
        "seq": _STRING,
        "returnPath": _STRING,
        "category": _STRING,
        "time": {"type": "string", "description": "when it bounced, ms since the epoch", "examples": ["1795417000123"]},
        "response": _STRING,
        "fbl": _STRING,
    },
    "additionalProperties": True,
}


class ZoneLogSource:
    name = "zonemta"
    title = "ZoneMTA"
    record_types: tuple[str, ...] = tuple(a.value for a in Action)
    received_types: tuple[str, ...] = ("QUEUED",)
    delivered_types: tuple[str, ...] = ("ACCEPTED",)
    # Not HTTP_BOUNCE: core/http-bounce reports the same rejection a REJECTED entry logs, and would count it twice.
    bounced_types: tuple[str, ...] = ("REJECTED",)
    deferred_types: tuple[str, ...] = ("DEFERRED",)
    complaint_types: tuple[str, ...] = ()  # ZoneMTA receives no feedback reports
    record_schema = RECORD_SCHEMA
    form_schema: dict[str, Any] | None = FORM_SCHEMA

    def split(self, body: bytes, content_type: str) -> Sequence[bytes]:
        stripped = body.lstrip()
        # A form never starts as JSON does, and `curl -d` labels JSON as a form: the body's first byte decides.
        if content_type == FORM_MEDIA_TYPE and not stripped.startswith((b"[", b"{")):
            return [form_record(body)]
        return [bytes(raw) for raw in split_body(body)]

    def decode(self, raw: bytes) -> list[LogEvent]:
        payload, entries = parse(raw)
        return [self._event(entry, payload) for entry in entries]

    def _event(self, entry: Entry, payload: str) -> LogEvent:
        admitted = admit(entry)
        domain = admitted.domain if admitted else recipient_domain(entry.recipient)
        return LogEvent(
            source=self.name,
            type=entry.kind,
            dedupe_key=dedupe_key(entry),
            event_at=entry.at,
            message_uuid=admitted.message if admitted else None,
            mta_message_id=entry.id,
            recipient=entry.recipient,
            sender=entry.sender,
            queue_name=domain,
            domain=domain,
            tenant_id=None,
            campaign_id=None,
            response_code=response_code(entry),
            payload=payload,
        )

    def facts(self, payload: str, recipient: str) -> EventFacts:
        _, entries = parse(payload.encode())
        entry = next((e for e in entries if e.recipient == recipient), entries[0])
        observation = observe(entry)
        if observation is not None:  # admitted on the way in by the same rules (admit): a safety net
            check_against_model(observation)
        return EventFacts(
            observation=observation,
            egress_source=entry.zone,
            egress_pool=entry.zone,
            node=entry.node,
            bounce_class=entry.category if entry.kind in FAILURE_KINDS else None,
            delivery_seconds=_delivery_seconds(entry),
        )


def _delivery_seconds(entry: Entry) -> float | None:
    """For a delivery: how long after ZoneMTA made the queue id (at MAIL FROM, or the API's send); None when the
    entry has no time of its own to measure it by."""
    if entry.kind != "ACCEPTED" or entry.created is None or entry.at_is_created:
        return None
    return max(0.0, (entry.at - entry.created).total_seconds())


ZONEMTA = ZoneLogSource()
