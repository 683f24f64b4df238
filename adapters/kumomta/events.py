"""KumoMTA log records (``JsonLogRecord`` in kumo-log-types), as ``log_hooks`` and webhooks post them.

Only the fields mtactl reads are declared; unknown fields are ignored here and kept verbatim in the stored record,
since kumod adds fields between releases. Required are the fields every record type carries and mtactl cannot do
without: type, id, sender, recipient, queue and timestamp.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta


class EnhancedCode(msgspec.Struct):
    class_: int = msgspec.field(name="class")
    subject: int
    detail: int

    def format(self) -> str:
        return f"{self.class_}.{self.subject}.{self.detail}"


class Response(msgspec.Struct):
    code: int
    content: str = ""
    enhanced_code: EnhancedCode | None = None
    command: str | None = None


Short = Annotated[str, Meta(max_length=100)]


class KumoLogRecord(msgspec.Struct, kw_only=True):
    # Bounds match the columns the values are stored in, so a record that fits here never fails in the database.
    type: Annotated[str, Meta(min_length=1, max_length=40)]
    id: Annotated[str, Meta(min_length=1, max_length=100)]
    sender: Annotated[str, Meta(max_length=320)]
    recipient: Annotated[str, Meta(pattern=r"^[^\s@]*@[^\s@]+$", max_length=320)]
    queue: Annotated[str, Meta(min_length=1, max_length=255)]
    timestamp: int
    site: str = ""
    size: int = 0
    response: Response | None = None
    event_time: datetime | None = None
    created: int | None = None
    created_time: datetime | None = None
    num_attempts: int = 0
    bounce_classification: str | None = None
    egress_pool: Short | None = None
    egress_source: str | None = None
    feedback_report: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    delivery_protocol: str | None = None
    reception_protocol: str | None = None
    nodeid: str | None = None

    def occurred_at(self) -> datetime:
        """When the event happened: ``event_time`` (microseconds, newer kumod) or ``timestamp`` (seconds)."""
        if self.event_time is not None:
            return self.event_time if self.event_time.tzinfo else self.event_time.replace(tzinfo=UTC)
        return datetime.fromtimestamp(self.timestamp, UTC)

    def created_at(self) -> datetime:
        if self.created_time is not None:
            return self.created_time if self.created_time.tzinfo else self.created_time.replace(tzinfo=UTC)
        if self.created is not None:
            return datetime.fromtimestamp(self.created, UTC)
        return self.occurred_at()


record_decoder = msgspec.json.Decoder(KumoLogRecord)
batch_splitter = msgspec.json.Decoder(list[msgspec.Raw])


def split_body(body: bytes) -> list[msgspec.Raw]:
    """One record object or an array of them -> the raw records (raises msgspec.DecodeError if not JSON)."""
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        return batch_splitter.decode(body)
    msgspec.json.decode(body)  # validate that it is JSON at all
    return [msgspec.Raw(body)]
