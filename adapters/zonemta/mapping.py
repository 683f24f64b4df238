"""ZoneMTA's entries -> the queue model. The tables below are the whole mapping (also in the README).

A mirrored message is one delivery: one (queue id, recipient). Every function here takes an ``Entry``, which is
about one recipient: an entry listing several (QUEUED's ``to``) is one ``Entry`` per recipient, each its own
message and event.

Actions that move the mirror are the keys of ``ACTION_STATUS``, and DROP when it names a delivery (``seq``: the
suppression list). The others land as events only: NOQUEUE and a plugin's DROP at intake (never queued),
DELETED (it names the delivery by ``seq`` alone, never its recipient, so it cannot be tied to a message keyed by
recipient), QUEUE_BOUNCE (a DSN queued under its own id, ``bounceId``, whose own entries mirror it), SPAMCHECK,
VIRUSCHECK, QUEUE_POLL, and any action of another plugin.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import NamedTuple

from adapters.model import (
    EMAIL_PATTERN,
    BounceType,
    MessageQueueStatus,
    SmtpResponse,
    normalize_address,
    recipient_domain,
)
from adapters.model.observation import MTA_MESSAGE_ID, MessageObservation
from adapters.zonemta.events import HTTP_BOUNCE, Entry

S = MessageQueueStatus

# Action -> the status it gives the delivery's message.
ACTION_STATUS: dict[str, MessageQueueStatus] = {
    "QUEUED": S.ready,  # stored and queued
    "DEFERRED": S.deferred,  # to be retried at nextattempt
    "ACCEPTED": S.delivered,
    "REJECTED": S.bounced,  # failed for good: refused, or out of retries (ZoneMTA logs no separate expiry)
    HTTP_BOUNCE: S.bounced,  # core/http-bounce's report of the same rejection
}
# DROP of a delivery (it names ``seq``): shift() found the recipient or its domain on the suppression list and took
# the delivery out of the queue, unsent and with no DSN. Neither the receiver nor a bounce: ``cancelled``.
SUPPRESSED = S.cancelled
ATTEMPT_KINDS = frozenset({"DEFERRED", "ACCEPTED", "REJECTED", HTTP_BOUNCE})  # their `response` is the reply
FAILURE_KINDS = frozenset({"DEFERRED", "REJECTED", HTTP_BOUNCE})

# ZoneMTA bounce categories -> BounceType: every category of config/bounces.txt, and those lib/sender.js and
# lib/bounces.js set themselves (dns, http, network, policy, other). Categories of a bounces file of one's own, and
# an entry without one, are "unknown", except that a DEFERRED is by definition "soft".
CATEGORY_TYPE: dict[str, BounceType] = {
    **dict.fromkeys(["recipient", "envelope", "sender", "dns", "config"], BounceType.hard),
    **dict.fromkeys(["rate", "capacity", "greylist", "network"], BounceType.soft),
    **dict.fromkeys(["blacklist", "block", "spam", "policy", "dmarc", "auth", "virus", "message"], BounceType.block),
    **dict.fromkeys(["protocol", "other", "http"], BounceType.unknown),
}

# Message UUIDs are derived, not random, so every entry about one delivery lands on one row; the namespace is not
# KumoMTA's, and the name starts with "zonemta", so no ZoneMTA message can take a KumoMTA message's id.
ZONEMTA_NAMESPACE = uuid.UUID("14ac86d3-a516-4ebd-a8e8-d6960f4af508")
_NAMESPACE_BYTES = ZONEMTA_NAMESPACE.bytes


def status_of(entry: Entry) -> MessageQueueStatus | None:
    if entry.kind == "DROP":
        return SUPPRESSED if entry.seq else None
    return ACTION_STATUS.get(entry.kind)


def message_uuid(entry: Entry) -> uuid.UUID:
    """The mirrored message an entry is about (``recipient_uuid`` of its queue id and recipient)."""
    return recipient_uuid(entry.id, entry.recipient)


def recipient_uuid(queue_id: str, recipient: str) -> uuid.UUID:
    """uuid5 of ("zonemta", queue id, recipient with its domain lower-cased) in ``ZONEMTA_NAMESPACE``: one
    recipient of one queued message, whether an entry or a listed row (``client``) names it."""
    # uuid.uuid5 by hand, as adapters.kumomta.mapping does (same value, without re-deriving the namespace's bytes).
    name = f"zonemta\x00{queue_id}\x00{normalize_address(recipient)}".encode()
    return uuid.UUID(bytes=hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16], version=5)


def dedupe_key(entry: Entry) -> bytes:
    """The identity of one event: the same entry posted twice yields the same key.

    Beyond action, queue id, seq, recipient and time it takes what tells two entries of one delivery apart when
    they share a time (every entry without ``_mtactl.at`` is placed at its queue id's time): the deferral's count
    and next attempt, the reply, and a DSN's kind and id (a failure DSN and a delay DSN of one delivery).
    """
    parts = [
        entry.kind,
        entry.id,
        entry.seq or "",
        normalize_address(entry.recipient),
        entry.at.isoformat(),
        "" if entry.defcount is None else str(entry.defcount),
        entry.next_attempt.isoformat() if entry.next_attempt else "",
        entry.response or "",
        entry.bounce_type or "",
        entry.bounce_id or "",
    ]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()


# formatSMTPResponse's form: the code, then (optionally) an enhanced code, then the text, on one line.
_REPLY = re.compile(r"([1-5][0-9]{2})(?=[ -]|$)(?:[ -]+([245]\.[0-9]{1,3}\.[0-9]{1,3})(?![0-9.]))?[ -]*(.*)", re.S)


def parse_reply(text: str | None) -> tuple[int, str | None, str] | None:
    """ "550 5.1.1 text" -> (550, "5.1.1", "text"); None for a response that is not an SMTP reply (a network
    error, an HTTP failure)."""
    if not text:
        return None
    match = _REPLY.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)), match.group(2), match.group(3).strip()


def response_code(entry: Entry) -> int | None:
    reply = parse_reply(entry.response)
    return reply[0] if reply else None


def smtp_response(entry: Entry) -> SmtpResponse | None:
    reply = parse_reply(entry.response)
    if reply is None:
        return None
    code, enhanced, message = reply
    return SmtpResponse(code=code, enhanced_code=enhanced, message=message, timestamp=entry.at)


def bounce_type(entry: Entry) -> BounceType | None:
    if entry.kind not in FAILURE_KINDS:
        return None
    mapped = CATEGORY_TYPE.get(entry.category or "", BounceType.unknown)
    if mapped is BounceType.unknown and entry.kind == "DEFERRED":
        return BounceType.soft
    return mapped


def protocol(value: str | None) -> str | None:
    """ZoneMTA's ``protocol`` (smtp, lmtp, or http for its mail-to-HTTP deliveries) as the model's; LMTP is
    neither of the model's two."""
    return value if value in ("smtp", "http") else None


def _message_id(entry: Entry) -> str:
    return entry.message_id or entry.id


def _headers(entry: Entry) -> dict[str, str] | None:
    """What QUEUED logs of the message's headers: its Message-ID and Subject (decoded, at most 128 characters and
    a note of the rest: lib/mail-drop.js)."""
    headers = {}
    if entry.kind == "QUEUED" and entry.message_id:
        headers["Message-ID"] = entry.message_id
    if entry.subject is not None:
        headers["Subject"] = entry.subject
    return headers or None


def _attempts(entry: Entry) -> int:
    """Attempts the entry vouches for: a DEFERRED's ``defcount`` (its n-th deferral: n attempts), one for any
    other attempt's entry (the merge keeps the highest count seen)."""
    if entry.kind not in ATTEMPT_KINDS:
        return 0
    return entry.defcount if entry.kind == "DEFERRED" and entry.defcount is not None else 1


def _size(entry: Entry) -> int:
    """Bytes sent in an attempt (``size``), else QUEUED's body size, else 0."""
    if entry.size is not None:
        return entry.size
    return entry.body_size if entry.body_size is not None else 0


def observe(entry: Entry) -> MessageObservation | None:
    """The entry's effect on the delivery's mirrored message, or None for entries that do not describe one."""
    status = status_of(entry)
    if status is None:
        return None
    at = entry.at
    domain = recipient_domain(entry.recipient)
    attempt = entry.kind in ATTEMPT_KINDS
    failure = entry.kind in FAILURE_KINDS or status is SUPPRESSED
    metadata = {
        key: value
        for key, value in ((MTA_MESSAGE_ID, entry.id), ("zonemta_seq", entry.seq), ("zone", entry.zone))
        if value is not None
    }
    return MessageObservation(
        id=message_uuid(entry),
        message_id=_message_id(entry),
        queue_name=domain,
        recipient=normalize_address(entry.recipient),
        sender=normalize_address(entry.sender),
        domain=domain,
        status=status,
        status_at=at,
        size_bytes=_size(entry),
        num_attempts=_attempts(entry),
        last_attempt_at=at if attempt else None,
        next_attempt_at=entry.next_attempt if entry.kind == "DEFERRED" else None,
        created_at=entry.created or at,
        delivered_at=at if status is S.delivered else None,
        response_at=at if attempt else None,
        smtp_response=smtp_response(entry) if attempt else None,
        pool_name=entry.zone,
        delivery_protocol=protocol(entry.protocol) if attempt else None,
        failure_at=at if failure else None,
        last_bounce_reason=(entry.reason if status is SUPPRESSED else entry.response) if failure else None,
        bounce_classification=bounce_type(entry),
        headers=_headers(entry),
        metadata=metadata or None,
    )


class Admitted(NamedTuple):
    """What the event log keeps beside an entry that moves the mirror: its message and domain."""

    message: uuid.UUID
    domain: str


_ADDRESS = re.compile(EMAIL_PATTERN)
_SHORT = 100  # ShortName: pool_name
_MESSAGE_ID = 998


def admit(entry: Entry) -> Admitted | None:
    """Check that the mirror row ``observe`` would make from this entry is one ``MessageQueueItem`` allows, and
    return what the event log keeps beside it; None for entries that do not describe a queued message.

    The acknowledgement path's check: the same rules as ``check_against_model(observe(entry))`` on the values
    those rules can fail on (addresses, counters, lengths; the rest hold by construction), without building the
    observation. A test holds the two to the same verdict on generated entries. Raises ValueError naming the
    field."""
    if status_of(entry) is None:
        return None
    field = entry.recipient_field
    if not entry.recipient:
        raise ValueError(f"`{field}` names no recipient: a {entry.kind} entry is about one")
    recipient = normalize_address(entry.recipient)
    if len(recipient) > 320 or not _ADDRESS.match(recipient):
        raise ValueError(f"`{field}` is not an e-mail address: {recipient[:100]!r}")
    sender = normalize_address(entry.sender)
    if sender and (len(sender) > 320 or not _ADDRESS.match(sender)):
        raise ValueError(f"`from` is not an e-mail address (nor empty or <>, the null sender): {sender[:100]!r}")
    if _size(entry) < 0:
        raise ValueError("`size` is negative" if entry.size is not None else "`body` is negative")
    if _attempts(entry) < 0:
        raise ValueError("`defcount` is negative")
    if entry.zone is not None and len(entry.zone) > _SHORT:
        raise ValueError(f"`zone` is longer than {_SHORT} characters")
    if len(_message_id(entry)) > _MESSAGE_ID:
        field = "message-id" if entry.kind == "QUEUED" else "messageId"
        raise ValueError(f"`{field}` (the Message-ID) is longer than {_MESSAGE_ID} characters")
    return Admitted(message_uuid(entry), recipient_domain(entry.recipient))
