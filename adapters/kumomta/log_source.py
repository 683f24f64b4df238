"""KumoMTA's log records as the neutral ``LogEvent``: the event source the control plane ingests through.

``decode`` is the acknowledgement path's work per record: the checks a record must pass to be accepted (bounds
the database would enforce, the model's rules for what it would write in the mirror) and the columns the log is
keyed and searched by. Everything else is left to the projections, which read the stored payload again
(``facts``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from adapters.kumomta.events import KumoLogRecord, RecordType, record_decoder
from adapters.kumomta.mapping import admit, dedupe_key, observe
from adapters.model import normalize_address, recipient_domain
from adapters.model.events import EventFacts, LogEvent
from adapters.model.observation import check_against_model
from adapters.model.records import check_nesting, escape_nul, split_body


def without_nul(record: KumoLogRecord) -> KumoLogRecord:
    """The record with every NUL in its strings (and mapping keys) written as the six characters \\u0000, which
    Postgres can store (it refuses NUL in text and in jsonb) and SQLite then stores the same."""
    return msgspec.convert(escape_nul(msgspec.to_builtins(record)), KumoLogRecord)


def _utc(value: datetime, name: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} is out of range (years 1 to 9999 in UTC)") from None


def parse(raw: bytes) -> tuple[str, KumoLogRecord]:
    """The storable payload text and the decoded record (NUL escaped in both); raises on any fault."""
    check_nesting(raw)
    record = record_decoder.decode(raw)
    # Decoded, the text is valid UTF-8 JSON, which holds no raw NUL (msgspec refuses control characters and bad
    # UTF-8): it is stored as it is. A NUL can only be the escape \u0000 inside a string value.
    payload = raw.decode()
    if "\\u0000" in payload:  # JSON text carries a NUL only escaped, so most records need no walk
        record = without_nul(record)
    return payload, record


_STRING = {"type": "string"}
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "KumoLogRecord",
    "description": "A KumoMTA log record (JsonLogRecord). Fields beyond these are accepted and stored verbatim.",
    "required": ["type", "id", "sender", "recipient", "queue", "timestamp"],
    "properties": {
        "type": {"type": "string", "examples": ["Delivery"]},
        "id": _STRING,
        "sender": _STRING,
        "recipient": _STRING,
        "queue": {"type": "string", "description": "campaign:tenant@domain!routing_domain"},
        "timestamp": {"type": "integer", "description": "Unix seconds"},
        "event_time": {"type": "string", "format": "date-time"},
        "created": {"type": "integer"},
        "site": _STRING,
        "size": {"type": "integer"},
        "num_attempts": {"type": "integer"},
        "response": {"type": "object"},
        "bounce_classification": _STRING,
        "egress_pool": _STRING,
        "meta": {"type": "object"},
        "headers": {"type": "object"},
    },
    "additionalProperties": True,
}


class KumoLogSource:
    name = "kumomta"
    title = "KumoMTA"
    record_types: tuple[str, ...] = tuple(t.value for t in RecordType)
    received_types: tuple[str, ...] = ("Reception",)
    delivered_types: tuple[str, ...] = ("Delivery",)
    # OOB: the receiver bounced it after accepting it. AdminBounce is an operator's verdict, not the receiver's.
    bounced_types: tuple[str, ...] = ("Bounce", "OOB")
    deferred_types: tuple[str, ...] = ("TransientFailure",)
    complaint_types: tuple[str, ...] = ("Feedback",)
    record_schema = RECORD_SCHEMA
    form_schema: dict[str, Any] | None = None

    def split(self, body: bytes, content_type: str) -> Sequence[bytes]:
        return [bytes(raw) for raw in split_body(body)]  # JSON whatever the content type says

    def decode(self, raw: bytes) -> list[LogEvent]:
        payload, record = parse(raw)
        at = _utc(record.occurred_at(), "event_time" if record.event_time else "timestamp")
        # A record listing several recipients (kumod's batch handling) is one event per recipient, each keyed as
        # if kumod had logged that recipient alone; all keep the record verbatim as their payload.
        return [self._event(part, at, payload) for part in record.per_recipient()]

    def _event(self, record: KumoLogRecord, at: datetime, payload: str) -> LogEvent:
        # The least work per record: the key, the time, the columns the log is searched by, and the checks. The
        # mapping onto the model (observe) is the projections' to do.
        admitted = admit(record)
        if admitted is not None:
            _utc(record.created_at(), "created")
        return LogEvent(
            source=self.name,
            type=record.type,
            dedupe_key=dedupe_key(record),
            event_at=at,
            message_uuid=admitted.message if admitted else None,
            mta_message_id=record.id,
            recipient=record.recipient,
            sender=record.sender,
            queue_name=record.queue,
            domain=admitted.domain if admitted else recipient_domain(record.recipient),
            tenant_id=admitted.tenant_id if admitted else None,
            campaign_id=admitted.campaign_id if admitted else None,
            response_code=record.response.code if record.response else None,
            payload=payload,
        )

    def facts(self, payload: str, recipient: str) -> EventFacts:
        _, whole = parse(payload.encode())
        parts = whole.per_recipient()
        record = next((part for part in parts if part.recipient == recipient), parts[0])
        observation = observe(record)
        if observation is not None:  # admitted on the way in by the same rules (admit): a safety net
            check_against_model(observation)
        delivery = None
        if record.type == "Delivery":
            delivery = max(0.0, (record.occurred_at() - record.created_at()).total_seconds())
        complained, feedback_type, complaint_tenant = complaint(record)
        return EventFacts(
            observation=observation,
            egress_source=record.egress_source or None,
            egress_pool=record.egress_pool or None,
            node=record.nodeid or None,
            bounce_class=record.bounce_classification or None,
            delivery_seconds=delivery,
            complaint_recipients=complained,
            feedback_type=feedback_type,
            complaint_tenant=complaint_tenant,
        )


def complaint(record: KumoLogRecord) -> tuple[tuple[str, ...], str | None, str | None]:
    """A Feedback record's complaint: the addresses reported (the ARF report's Original-Rcpt-To, which kumod's
    parser names ``original_rcpto_to``, else the recipient kumod's X-KumoRef trace names), the feedback type, and
    the tenant of the reported message (from the trace, else the record's meta). Nothing for other records: the
    record's own recipient is the feedback mailbox, not the complainer."""
    report = record.feedback_report
    if record.type != "Feedback" or not isinstance(report, dict):
        return (), None, None
    trace = report.get("supplemental_trace")
    trace = trace if isinstance(trace, dict) else {}
    listed = report.get("original_rcpto_to") or report.get("original_rcpt_to") or []
    if isinstance(listed, str):
        listed = [listed]
    addresses = [a.strip().strip("<>").strip() for a in listed if isinstance(a, str)]
    if not addresses and isinstance(trace.get("recipient"), str):
        addresses = [trace["recipient"].strip()]
    found = tuple(dict.fromkeys(normalize_address(a) for a in addresses if "@" in a))
    kind = report.get("feedback_type")
    tenant = trace.get("tenant") if isinstance(trace.get("tenant"), str) else None
    if tenant is None and isinstance((record.meta or {}).get("tenant"), str):
        tenant = (record.meta or {})["tenant"]
    return found, kind if isinstance(kind, str) else None, tenant or None


KUMOMTA = KumoLogSource()
