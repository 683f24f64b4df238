"""KumoMTA log records (``JsonLogRecord`` in kumo-log-types), as ``log_hooks`` and webhooks post them.

Only the fields mtactl reads are declared; unknown fields are ignored here and kept verbatim in the stored record,
since kumod adds fields between releases. Required are the fields every record type carries and mtactl cannot do
without: type, id, sender, recipient, queue and timestamp.

Shapes kumod really writes (KumoCorp/kumomta at 3ebc1e85, ``crates/kumo-log-types/src/lib.rs`` and the callers of
``log_disposition``/``log_rejection`` in ``crates/kumod/src/logging/``; fixtures/kumomta/README.md has the list):

* ``recipient`` is one-or-many: a string, or (batch handling, ``BatchByDomain``) a list of the recipients that
  shared one outcome. ``KumoLogRecord.per_recipient`` splits such a record into one record per recipient, which
  is how it is stored: one event and one mirrored message per recipient, exactly as if kumod had logged each alone.
* A ``Rejection`` (an inbound SMTP refusal, logged before any message exists) has an empty ``id``, ``queue`` and
  ``site``, and an empty ``sender``/``recipient`` when the refusal came before MAIL FROM/RCPT TO. Every other type
  names a message, so for those an empty id or queue, or a recipient that is not an address, is refused.
"""

from __future__ import annotations

import enum
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


# Integer bounds of the columns the values are stored in (INTEGER, BIGINT): a number beyond them would make the
# database refuse the whole write, so it is refused here, for this record alone.
Int32 = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
# Unix seconds that datetime (and so the event_at column) can hold: years 1 to 9999.
UnixSeconds = Annotated[int, Meta(ge=-62_135_596_800, le=253_402_300_799)]


class Response(msgspec.Struct):
    code: Int32
    content: str = ""
    enhanced_code: EnhancedCode | None = None
    command: str | None = None


Short = Annotated[str, Meta(max_length=100)]
# An address, or "" (only a Rejection may leave it empty: ``__post_init__``).
Address = Annotated[str, Meta(pattern=r"^(?:[^\s@]*@[^\s@]+)?$", max_length=320)]
# Rejection is the one type logged without a message (kumod's logging/rejection.rs): no id, queue or site.
MESSAGELESS_TYPES = frozenset({"Rejection"})


class KumoLogRecord(msgspec.Struct, kw_only=True):
    # Bounds match the columns the values are stored in, so a record that fits here never fails in the database.
    type: Annotated[str, Meta(min_length=1, max_length=40)]
    id: Annotated[str, Meta(max_length=100)]
    sender: Annotated[str, Meta(max_length=320)]
    # kumod declares it OneOrMany (serde_with, PreferOne): read it through ``recipient``/``recipients``.
    logged_recipient: Address | list[Address] = msgspec.field(name="recipient")
    queue: Annotated[str, Meta(max_length=255)]
    timestamp: UnixSeconds
    site: str = ""
    size: Int64 = 0
    response: Response | None = None
    event_time: datetime | None = None
    created: UnixSeconds | None = None
    created_time: datetime | None = None
    num_attempts: Int32 = 0
    bounce_classification: str | None = None
    egress_pool: Short | None = None
    egress_source: str | None = None
    feedback_report: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    delivery_protocol: str | None = None
    reception_protocol: str | None = None
    nodeid: str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into the ValidationError the decoder raises, so the record is rejected.
        if self.type in MESSAGELESS_TYPES:
            return
        if not self.id:
            raise ValueError("`id` is empty: only a Rejection record may have no message id")
        if not self.queue:
            raise ValueError("`queue` is empty: only a Rejection record may have no queue")
        if not self.recipients or not all(self.recipients):
            raise ValueError("`recipient` names no address: only a Rejection record may have none")

    @property
    def recipients(self) -> list[str]:
        """Every recipient the record is about, one or many as logged."""
        value = self.logged_recipient
        return [value] if isinstance(value, str) else value

    @property
    def recipient(self) -> str:
        """The record's one recipient ("" for a Rejection without one). A record listing several has no single
        recipient: it raises ValueError rather than silently picking one, so split it with ``per_recipient``."""
        value = self.logged_recipient
        if isinstance(value, str):
            return value
        if len(value) > 1:
            raise ValueError(f"`recipient` lists {len(value)} recipients: split the record per recipient first")
        return value[0] if value else ""

    def per_recipient(self) -> list[KumoLogRecord]:
        """One record per recipient, each naming that recipient alone (the record itself when it names one)."""
        value = self.logged_recipient
        if isinstance(value, str) or len(value) <= 1:
            return [self]
        return [msgspec.structs.replace(self, logged_recipient=address) for address in value]

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


class RecordType(enum.StrEnum):
    """The ``type`` of a KumoMTA log record, as the events API filters by it: every variant of ``RecordType`` in
    kumo-log-types (KumoCorp/kumomta at 3ebc1e85, ``crates/kumo-log-types/src/lib.rs``) but ``Any``, which only
    matches records in kumod's logging configuration and is never a record's type."""

    Reception = "Reception"
    Delivery = "Delivery"
    Bounce = "Bounce"
    TransientFailure = "TransientFailure"
    Expiration = "Expiration"
    AdminBounce = "AdminBounce"
    OOB = "OOB"
    Feedback = "Feedback"
    Rejection = "Rejection"
    AdminRebind = "AdminRebind"
    DeferredInjectionRebind = "DeferredInjectionRebind"
    Delayed = "Delayed"
    XferOut = "XferOut"
    XferIn = "XferIn"
