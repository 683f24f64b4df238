"""ZoneMTA's log entries and the body of its core/http-bounce plugin, as mtactl reads them.

Only the fields mtactl reads are declared; the others are ignored here and kept verbatim in the stored record
(third-party plugins add their own actions and fields). What the ZoneMTA source says about them (zone-eu/zone-mta
3.10.18 at cf94b992, with @zone-eu/wild-plugins 1.0.9, @zone-eu/seq-index 1.1.5 and nodemailer 9.0.3; the file
where each fact is, in brackets):

* An entry is made by ``remotelog(id, seq, action, data)`` [wild-plugins index.js]: ``{id, seq, action, …data}``,
  ``seq`` only when it is set, a key of ``data`` never overriding those three. It is handed to every ``log:entry``
  hook, and msgpack-encoded to the UDP remote log when one is configured. No entry carries the time it was made.
* ``id`` is the queue id: ``seq-index``'s ``get()`` [lib/mail-queue.js, lib/smtp-interface.js at MAIL FROM,
  lib/api-server.js], 14 hex digits of (milliseconds since the epoch * 0x1000 + a counter) and 4 hex digits of
  instance suffix [seq-index lib/seq-index.js]: the id says when ZoneMTA made it (``queue_id_time``).
* ``seq`` names one delivery (one recipient) of the message: 3 or more hex digits, counted from 001 in the order
  of the message's recipients [lib/mail-queue.js ``push``]. Entries written before the message is split into
  deliveries (QUEUED, NOQUEUE, a plugin's DROP, SPAMCHECK, VIRUSCHECK) have none, and list every recipient in
  ``to``, comma-separated, or ``<>`` for none [lib/mail-drop.js ``messageInfo``]; ``from`` is ``<>`` for the null
  sender there.
* An attempt's entry (ACCEPTED, DEFERRED, REJECTED [lib/sender.js]) names its one recipient in ``to``, the zone,
  the bounce ``category`` (DEFERRED, REJECTED), the reply in ``response`` (``formatSMTPResponse``: code, enhanced
  code, text on one line, at most 312 characters), ``size`` (bytes sent, absent when no message was streamed) and
  for DEFERRED ``defcount`` (this is the n-th deferral) and ``nextattempt`` (ms since the epoch). Its ``start``
  and ``timer`` are durations in ms since the stream was made, or false [lib/byte-counter.js]: not times, and not
  read. A DROP of the suppression list [lib/mail-queue.js ``shift``] names the delivery (``seq``) and its
  ``recipient``; a DELETED names only ``id`` and ``seq`` (or only ``id``), never a recipient.
* core/http-bounce [plugins/core/http-bounce.js] POSTs ``{id, sessionId, to, seq, returnPath, category, time,
  response}`` (and ``fbl`` when the message had an X-FBL header) through nodemailer's fetch, which sends it as
  ``application/x-www-form-urlencoded``, every value a trimmed string [nodemailer lib/fetch/index.js]. ``to`` is
  the delivery's one recipient, ``returnPath`` its envelope sender, ``time`` when it was rejected, in ms
  [lib/sender.js ``sendBounceMessage``].
"""

from __future__ import annotations

import enum
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, NamedTuple
from urllib.parse import parse_qsl

import msgspec
from msgspec import Meta

from adapters.model.observation import EPOCH

# The event type of a core/http-bounce body (it has no action of its own), and the mark mtactl puts in the
# ``_mtactl`` object of such a body when it stores it as JSON (``form_record``).
HTTP_BOUNCE = "HTTP_BOUNCE"
HTTP_BOUNCE_FORM = "core/http-bounce"


class Action(enum.StrEnum):
    """Every ``action`` ZoneMTA's own code logs (the ``remotelog`` calls of zone-mta 3.10.18 and its core plugins,
    and of wild-plugins), and ``HTTP_BOUNCE`` for core/http-bounce's body. Plugins of others log actions of their
    own: those are stored as events too, under their action."""

    QUEUED = "QUEUED"  # lib/mail-drop.js: stored and queued, one delivery per recipient
    NOQUEUE = "NOQUEUE"  # lib/mail-drop.js (storing or queueing failed), wild-plugins reject(): never queued
    DROP = "DROP"  # wild-plugins drop() at intake (no seq); lib/mail-queue.js shift(): the suppression list (seq)
    ACCEPTED = "ACCEPTED"  # lib/sender.js: the receiver took it
    DEFERRED = "DEFERRED"  # lib/sender.js handleResponseError: to be retried at nextattempt
    REJECTED = "REJECTED"  # lib/sender.js handleResponseError: failed for good (or out of retries)
    DELETED = "DELETED"  # lib/mail-queue.js: remove() from the API (seq), or the stored message was gone (no seq)
    QUEUE_BOUNCE = "QUEUE_BOUNCE"  # plugins/core/email-bounce.js: a DSN queued (or not) under bounceId
    QUEUE_POLL = "QUEUE_POLL"  # lib/mail-queue.js shift(), only with queue.logQueuePolling: a poll of the queue
    SPAMCHECK = "SPAMCHECK"  # plugins/core/rspamd: the message's spam score
    VIRUSCHECK = "VIRUSCHECK"  # plugins/core/clamav: the message's virus scan
    HTTP_BOUNCE = HTTP_BOUNCE  # plugins/core/http-bounce.js: the POSTed form of one bounce


# ZoneMTA's actions that always name a message (a queue id): all but NOQUEUE and DROP (wild-plugins' reject() and
# drop() log the envelope's id, "" when a plugin refuses or drops before there is one) and QUEUE_POLL (null when
# the poll found nothing). An entry naming a delivery (seq) names its message too. Other plugins' actions may come
# without an id.
MESSAGE_ACTIONS = frozenset(Action) - {Action.NOQUEUE, Action.DROP, Action.QUEUE_POLL}

# Milliseconds since the epoch that datetime (and so the event_at column) can hold: years 1 to 9999.
EpochMs = Annotated[int, Meta(ge=-62_135_596_800_000, le=253_402_300_799_999)]
Int32 = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
QueueId = Annotated[str, Meta(max_length=100)]  # the events' mta_message_id column


class MtactlNote(msgspec.Struct, kw_only=True):
    """``_mtactl``: what mtactl's log:entry plugin adds to an entry it posts (the node's name, and when the hook
    fired, in ms since the epoch); ``form``: set by mtactl on a core/http-bounce body it stores as JSON."""

    node: Annotated[str, Meta(max_length=255)] | None = None
    at: EpochMs | None = None
    form: str | None = None


class LogEntry(msgspec.Struct, kw_only=True):
    """One ``log:entry`` record. ``id`` must be present (``remotelog`` always sets it; it is null only for a
    QUEUE_POLL that found nothing); every other field may be absent or null."""

    id: QueueId | None
    action: Annotated[str, Meta(max_length=40)] | None = None
    seq: Annotated[str, Meta(max_length=100)] | None = None
    to: str | None = None
    recipient: str | None = None
    sender: str | None = msgspec.field(name="from", default=None)
    return_path: str | None = msgspec.field(name="returnPath", default=None)
    zone: str | None = None
    category: str | None = None
    defcount: Int32 | None = None
    nextattempt: EpochMs | None = None
    response: str | None = None
    size: Int64 | None = None
    body: Int64 | None = None  # QUEUED: the body's size in bytes (headers not counted)
    message_id: str | None = msgspec.field(name="messageId", default=None)  # an attempt's: Message-ID, or the id
    message_id_header: str | None = msgspec.field(name="message-id", default=None)  # QUEUED's: Message-ID or <>
    subject: str | None = None
    protocol: str | None = None
    reason: str | None = None
    bounce_type: str | None = msgspec.field(name="bounceType", default=None)
    bounce_id: str | None = msgspec.field(name="bounceId", default=None)
    mtactl: MtactlNote | None = msgspec.field(name="_mtactl", default=None)


class HttpBounce(msgspec.Struct, kw_only=True):
    """The body core/http-bounce POSTs for one bounce (as ``form_record`` stores it: the form's fields, all
    strings, and ``_mtactl.form``)."""

    id: Annotated[str, Meta(min_length=1, max_length=100)]
    to: str
    # ms since the epoch: the form's text (a JSON relay may send it as a number)
    time: Annotated[str, Meta(pattern=r"^-?[0-9]{1,16}$")] | EpochMs
    seq: str | None = None
    session_id: str | None = msgspec.field(name="sessionId", default=None)
    return_path: str | None = msgspec.field(name="returnPath", default=None)
    category: str | None = None
    response: str | None = None
    fbl: str | None = None
    mtactl: MtactlNote | None = msgspec.field(name="_mtactl", default=None)


class _Shape(msgspec.Struct):
    mtactl: MtactlNote | None = msgspec.field(name="_mtactl", default=None)


entry_decoder = msgspec.json.Decoder(LogEntry)
bounce_decoder = msgspec.json.Decoder(HttpBounce)
_shape_decoder = msgspec.json.Decoder(_Shape)


def is_http_bounce(raw: bytes) -> bool:
    """Whether the JSON record is a core/http-bounce body (``_mtactl.form`` says so), not a log entry."""
    try:
        note = _shape_decoder.decode(raw).mtactl
    except msgspec.ValidationError:
        return False  # the log entry's decoder names the fault
    return note is not None and note.form == HTTP_BOUNCE_FORM


FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def form_record(body: bytes) -> bytes:
    """A form body (what core/http-bounce posts) as the JSON record mtactl stores: its fields as they were sent
    (text), with ``"_mtactl": {"form": "core/http-bounce"}`` saying where they came from. Raises
    ``msgspec.DecodeError`` when the body is not a form of UTF-8 text."""
    try:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True, errors="strict"))
    except ValueError as exc:  # UnicodeDecodeError is one
        raise msgspec.DecodeError(f"not a form of UTF-8 text ({exc})") from None
    record: dict[str, Any] = {**fields, "_mtactl": {"form": HTTP_BOUNCE_FORM}}
    return msgspec.json.encode(record)


_SEQ_INDEX_ID = re.compile(r"[0-9a-f]{18}")


def queue_id_time(queue_id: str | None) -> datetime | None:
    """When ZoneMTA made this queue id, read from the id itself (seq-index: 14 hex digits of ms * 0x1000 + a
    counter, then 4 of instance suffix; 18 digits for ids made between 2004 and 2527), or None for an id of
    another shape."""
    if not queue_id or not _SEQ_INDEX_ID.fullmatch(queue_id):
        return None
    return milliseconds(int(queue_id[:14], 16) >> 12)


def milliseconds(ms: int) -> datetime:
    """ms since the epoch as an aware datetime (exact: no float on the way)."""
    return EPOCH + timedelta(milliseconds=ms)


class Entry(NamedTuple):
    """What one entry says about one of its recipients (an entry listing several is one ``Entry`` each): the
    form the mapping reads, whichever of the two shapes it came in."""

    kind: str  # the action, or HTTP_BOUNCE
    id: str  # the queue id ("" when the entry has none)
    seq: str | None
    recipient: str  # as logged ("" when the entry names none)
    recipient_field: str  # where it was: "to" or "recipient"
    sender: str  # as logged; "" for the null sender (<>)
    at: datetime  # when it happened
    created: datetime | None  # when ZoneMTA made the queue id (None for an id not made by seq-index)
    at_is_created: bool  # the entry has no time of its own: ``at`` is the queue id's
    zone: str | None = None
    category: str | None = None
    defcount: int | None = None
    next_attempt: datetime | None = None
    response: str | None = None
    size: int | None = None
    body_size: int | None = None
    message_id: str | None = None  # the Message-ID header as logged (not "<>")
    subject: str | None = None
    protocol: str | None = None
    reason: str | None = None
    bounce_type: str | None = None
    bounce_id: str | None = None
    node: str | None = None


# One recipient as ZoneMTA logs it (lib/address-tools.js normalizeAddress: no control characters, no angle
# brackets, trimmed): something@domain, at most 320 characters (the events' recipient column).
_LOGGED_ADDRESS = re.compile(r"[^\s@]*@[^\s@]+")


def recipients(value: str | None, field: str) -> list[str]:
    """The recipients an entry lists in ``field`` (one, or comma-separated; none for "", "<>" or null)."""
    if not value:
        return []
    found = [part.strip() for part in value.split(",")]
    found = [part for part in found if part and part != "<>"]
    for part in found:
        if len(part) > 320 or not _LOGGED_ADDRESS.fullmatch(part):
            raise ValueError(f"`{field}` is not an address (nor a comma-separated list of them): {part[:100]!r}")
    return found


def _sender(*fields: tuple[str, str | None]) -> str:
    """The first of the entry's sender fields that is present ("" for the null sender, <>)."""
    field, value = next(((f, v) for f, v in fields if v is not None), ("from", ""))
    sender = value.strip()
    if len(sender) > 320:
        raise ValueError(f"`{field}` is longer than 320 characters")
    return "" if sender == "<>" else sender


def _when(note: MtactlNote | None, own: datetime | None, queue_id: str) -> tuple[datetime, datetime | None, bool]:
    """(when it happened, when the queue id was made, whether the first is the second): ``_mtactl.at`` when given,
    else the entry's own time (only a core/http-bounce body has one), else the time in its queue id."""
    created = queue_id_time(queue_id)
    if note is not None and note.at is not None:
        return milliseconds(note.at), created, False
    if own is not None:
        return own, created, False
    if created is not None:
        return created, created, True
    raise ValueError(
        "no time: the entry has no `_mtactl.at`, and its `id` is not a ZoneMTA queue id (18 hex digits) "
        f"to read one from: {queue_id[:100]!r}"
    )


def log_entry_parts(entry: LogEntry) -> list[Entry]:
    """A decoded log entry -> one ``Entry`` per recipient it lists (one with recipient "" if it lists none);
    raises ValueError naming the field at fault."""
    if not entry.action:
        raise ValueError("`action` is missing: every ZoneMTA log entry names its action")
    if entry.action == HTTP_BOUNCE:
        raise ValueError(f"`action` {HTTP_BOUNCE} is mtactl's name for a core/http-bounce body, not a log entry's")
    queue_id = entry.id or ""
    if not queue_id and (entry.seq or entry.action in MESSAGE_ACTIONS):
        raise ValueError(f"`id` is empty: a {entry.action} entry names its message by its queue id")
    at, created, at_is_created = _when(entry.mtactl, None, queue_id)
    if entry.recipient is not None:
        field, listed = "recipient", recipients(entry.recipient, "recipient")
    else:
        field, listed = "to", recipients(entry.to, "to")
    header = entry.message_id_header if entry.message_id_header not in (None, "", "<>") else None
    template = Entry(
        kind=entry.action,
        id=queue_id,
        seq=entry.seq or None,
        recipient="",
        recipient_field=field,
        sender=_sender(("from", entry.sender), ("returnPath", entry.return_path)),
        at=at,
        created=created,
        at_is_created=at_is_created,
        zone=entry.zone or None,
        category=entry.category or None,
        defcount=entry.defcount,
        next_attempt=milliseconds(entry.nextattempt) if entry.nextattempt is not None else None,
        response=entry.response,
        size=entry.size,
        body_size=entry.body,
        message_id=header or entry.message_id or None,
        subject=entry.subject,
        protocol=entry.protocol,
        reason=entry.reason,
        bounce_type=entry.bounce_type,
        bounce_id=entry.bounce_id,
        node=entry.mtactl.node if entry.mtactl else None,
    )
    if not listed:
        return [template]
    return [template._replace(recipient=address) for address in listed]


def http_bounce_parts(bounce: HttpBounce) -> list[Entry]:
    """A core/http-bounce body -> its ``Entry`` (one per recipient in ``to``: ZoneMTA sends one)."""
    at, created, at_is_created = _when(bounce.mtactl, _bounce_time(bounce.time), bounce.id)
    template = Entry(
        kind=HTTP_BOUNCE,
        id=bounce.id,
        seq=bounce.seq or None,
        recipient="",
        recipient_field="to",
        sender=_sender(("returnPath", bounce.return_path)),
        at=at,
        created=created,
        at_is_created=at_is_created,
        category=bounce.category or None,
        response=bounce.response,
        node=bounce.mtactl.node if bounce.mtactl else None,
    )
    listed = recipients(bounce.to, "to")
    if not listed:
        return [template]
    return [template._replace(recipient=address) for address in listed]


def _bounce_time(value: str | int) -> datetime:
    try:
        return milliseconds(msgspec.convert(int(value), EpochMs))
    except msgspec.ValidationError:
        raise ValueError("`time` is out of range (ms since the epoch, years 1 to 9999)") from None
