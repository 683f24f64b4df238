"""KumoMTA log records -> the queue model. The two tables below are the whole mapping (also in the README).

Every function here takes a record about one recipient. A record listing several (kumod's batch handling) is first
split with ``KumoLogRecord.per_recipient``: kumod logs one record per distinct outcome of a batch, listing the
recipients that shared it, so each recipient is its own message and event, keyed exactly as a single-recipient
record of it would be (``message_uuid`` and ``dedupe_key`` of the parts equal those of the records logged alone).

Record types that move the mirror are the keys of ``RECORD_STATUS``. The others land as events only:
Feedback (an ARF report received, under the report's own spool id), Rejection (an inbound SMTP refusal: no message
was queued), XferOut (the message left this node for another, which logs an XferIn under a new spool id), ``Any``
(a logging filter, never a record's type) and any type a later kumod adds.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import NamedTuple

from adapters.kumomta.events import KumoLogRecord
from adapters.model import (
    EMAIL_PATTERN,
    BounceType,
    MessageQueueStatus,
    QueueName,
    SmtpResponse,
    header,
    normalize_address,
    recipient_domain,
)
from adapters.model.observation import MessageObservation

S = MessageQueueStatus

# Record type -> the status it gives the message. Types absent here (Feedback: a complaint report about an
# earlier message, whose id is the report's own; Rejection: an inbound message refused, never queued; XferOut:
# handed to another node, whose XferIn names a new spool id, so no status of this id's row would be true; Any and
# types kumod may add later) are stored as events but do not touch the mirror.
RECORD_STATUS: dict[str, MessageQueueStatus] = {
    "Reception": S.ready,
    "AdminRebind": S.ready,  # moved to another queue, waiting there
    "DeferredInjectionRebind": S.ready,  # out of kumod's deferred-injection queue into its real one
    "XferIn": S.ready,  # taken over from another node (under a new spool id) and queued here
    "Delayed": S.scheduled,  # put in the scheduled queue (not yet due, suspended, throttled…), response says why
    "TransientFailure": S.deferred,
    "Delivery": S.delivered,
    "Bounce": S.bounced,
    "OOB": S.bounced,  # the remote side bounced it after accepting it
    "Expiration": S.expired,
    # Failed by an operator, not by the receiver: a bounce, unless mtactl cancelled it (``CANCEL_MARK``).
    "AdminBounce": S.bounced,
}
# mtactl's cancel and purge are kumod admin bounces too; the reason mtactl sends starts with this mark, and kumod
# logs the reason ("Administrator bounced with reason: mtactl-cancel: …"), so the record itself says "cancelled",
# whichever order the records and the operation's own write arrive in.
CANCEL_MARK = "mtactl-cancel: "
ADMIN_BOUNCE_PREFIX = "Administrator bounced with reason: "  # kumod's admin_bounce_v1.rs
ATTEMPT_TYPES = frozenset({"Delivery", "TransientFailure", "Bounce"})
# Types whose response is an outcome for the message (the receiver's reply, or an operator's/kumod's verdict). The
# other mirrored types carry kumod's own note ("Context: … Next due in …") in ``response``: not an SMTP reply.
RESPONSE_TYPES = frozenset(RECORD_STATUS) - {"Reception", "Delayed", "DeferredInjectionRebind", "XferIn"}
FAILURE_TYPES = frozenset({"TransientFailure", "Bounce", "OOB", "Expiration", "AdminBounce"})

# KumoMTA bounce classes (bounce-classify's PreDefinedBounceClass) -> BounceType. User-defined classes and
# Uncategorized are "unknown", except that a TransientFailure is by definition "soft".
BOUNCE_CLASS_TYPE: dict[str, BounceType] = {
    **dict.fromkeys(
        [
            "InvalidRecipient",
            "BadDomain",
            "InactiveMailbox",
            "InvalidSender",
            "DNSFailure",
            "RoutingErrors",
            "BadConfiguration",
        ],
        BounceType.hard,
    ),
    **dict.fromkeys(
        ["TransientFailure", "QuotaIssues", "BadConnection", "NoAnswerFromHost", "MessageExpired"],
        BounceType.soft,
    ),
    **dict.fromkeys(
        [
            "SpamBlock",
            "SpamContent",
            "SpamRelated",
            "PolicyRelated",
            "ContentRelated",
            "VirusRelated",
            "ProhibitedAttachment",
            "RelayDenied",
            "RelayingIssues",
            "AuthenticationFailed",
        ],
        BounceType.block,
    ),
    **dict.fromkeys(
        ["Uncategorized", "ProtocolErrors", "AutoReply", "ChallengeResponse", "Subscribe", "Unsubscribe"],
        BounceType.unknown,
    ),
}

# Message UUIDs are derived, not random, so every record about one message lands on one row.
KUMOMTA_NAMESPACE = uuid.UUID("0b3f5d6e-1c2a-4e8f-9d7b-5a4c3b2e1f00")


def bounce_type(record: KumoLogRecord) -> BounceType | None:
    if record.type == "Feedback":
        return BounceType.complaint
    if record.type not in FAILURE_TYPES:
        return None
    mapped = BOUNCE_CLASS_TYPE.get(record.bounce_classification or "", BounceType.unknown)
    if mapped is BounceType.unknown and record.type == "TransientFailure":
        return BounceType.soft
    return mapped


_NAMESPACE_BYTES = KUMOMTA_NAMESPACE.bytes


def message_uuid(record: KumoLogRecord) -> uuid.UUID:
    """kumod gives each message a spool id; the recipient is part of the key because one id can appear with
    several recipients in a node's logs (and in one record's list: split it with ``per_recipient`` first)."""
    # uuid.uuid5 by hand: the stdlib re-derives the namespace's bytes on every call, which made this a quarter
    # of the mapping's CPU (bench/decode.py). Same value: SHA-1 of namespace + name, version 5, RFC 4122 variant.
    name = f"{record.id}\x00{normalize_address(record.recipient)}".encode()
    return uuid.UUID(bytes=hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16], version=5)


def dedupe_key(record: KumoLogRecord) -> bytes:
    """The identity of one event: the same record posted twice yields the same key.

    Beyond id, type, time and recipient it takes the attempt number, the site and the response code, which
    separate two events of one message that kumod logs within the same (second-resolution) timestamp. A record
    without a spool id (a Rejection) also takes its SMTP session id, so that refusals of different connections
    logged in the same instant stay apart; records with an id keep the key they always had.
    """
    parts = [
        record.type,
        record.id,
        normalize_address(record.recipient),
        record.occurred_at().isoformat(),
        str(record.num_attempts),
        record.site,
        str(record.response.code) if record.response else "",
    ]
    if not record.id:
        parts.append(record.session_id or "")
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()


def protocol(value: str | None) -> str | None:
    if not value:
        return None
    upper = value.upper()
    if "SMTP" in upper:
        return "smtp"
    return "http" if "HTTP" in upper else None


def smtp_response(record: KumoLogRecord) -> SmtpResponse | None:
    if record.response is None or not 100 <= record.response.code <= 599:
        return None
    enhanced = record.response.enhanced_code
    return SmtpResponse(
        code=record.response.code,
        message=record.response.content,
        enhanced_code=enhanced.format() if enhanced and enhanced.class_ in (2, 4, 5) else None,
        timestamp=record.occurred_at(),
    )


def _cancelled(record: KumoLogRecord) -> bool:
    response = record.response
    content = response.content if response is not None else None
    return isinstance(content, str) and content.startswith(ADMIN_BOUNCE_PREFIX + CANCEL_MARK)


def observe(record: KumoLogRecord) -> MessageObservation | None:
    """The record's effect on the mirrored message, or None for records that do not describe a queued message."""
    status = RECORD_STATUS.get(record.type)
    if status is S.bounced and record.type == "AdminBounce" and _cancelled(record):
        status = S.cancelled
    if status is None:
        return None
    at = record.occurred_at()
    queue = QueueName.parse(record.queue)
    meta = record.meta or {}
    headers = _text_headers(record)
    tenant, campaign = _tenancy(record, queue)
    message_id = header(headers, "Message-ID") or record.id
    is_response = record.type in RESPONSE_TYPES and record.response is not None
    failure = record.type in FAILURE_TYPES
    return MessageObservation(
        id=message_uuid(record),
        message_id=message_id,
        queue_name=record.queue,
        recipient=normalize_address(record.recipient),
        sender=normalize_address(record.sender),
        domain=recipient_domain(record.recipient),
        routing_domain=queue.routing_domain,
        campaign_id=campaign,
        tenant_id=tenant,
        status=status,
        status_at=at,
        size_bytes=record.size,
        num_attempts=record.num_attempts,
        last_attempt_at=at if record.type in ATTEMPT_TYPES else None,
        created_at=record.created_at(),
        delivered_at=at if status is S.delivered else None,
        response_at=at if is_response else None,
        smtp_response=smtp_response(record) if is_response else None,
        pool_name=record.egress_pool or None,  # "" is no pool, as null is
        # kumod's own moves name pseudo-protocols ("DeferredSmtpInjection", "xfer"), not how it was delivered
        delivery_protocol=protocol(record.delivery_protocol) if record.type in RESPONSE_TYPES else None,
        failure_at=at if failure else None,
        last_bounce_reason=record.response.content if failure and record.response else None,
        bounce_classification=bounce_type(record),
        headers=headers,
        metadata={"kumomta_id": record.id, **({"meta": meta} if meta else {})},
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _text_headers(record: KumoLogRecord) -> dict[str, str] | None:
    """The record's headers whose value is text (the model's headers are text)."""
    headers = record.headers or None
    if headers is not None and not all(isinstance(v, str) for v in headers.values()):
        headers = {k: v for k, v in headers.items() if isinstance(v, str)} or None
    return headers


def _tenancy(record: KumoLogRecord, queue: QueueName) -> tuple[str | None, str | None]:
    """The message's tenant and campaign: from the queue name, else from the record's meta."""
    meta = record.meta or {}
    return queue.tenant or _text(meta.get("tenant")), queue.campaign or _text(meta.get("campaign"))


class Admitted(NamedTuple):
    """What the event log keeps beside a record that moves the mirror: its message, domain, tenant, campaign."""

    message: uuid.UUID
    domain: str
    tenant_id: str | None
    campaign_id: str | None


_ADDRESS = re.compile(EMAIL_PATTERN)
_SHORT = 100  # ShortName: campaign_id, tenant_id, pool_name
_MESSAGE_ID = 998


def admit(record: KumoLogRecord) -> Admitted | None:
    """Check that the mirror row ``observe`` would make from this record is one ``MessageQueueItem`` allows, and
    return what the event log keeps beside it; None for records that do not describe a queued message.

    The acknowledgement path's check: the same rules as ``check_against_model(observe(record))`` on the values
    those rules can fail on (addresses, counters, lengths, the enhanced code; the rest hold by construction), at a
    fraction of the cost, since no observation is built. A test holds the two to the same verdict on generated
    records. Raises ValueError naming the field."""
    if record.type not in RECORD_STATUS:
        return None
    tenant, campaign = _tenancy(record, QueueName.parse(record.queue))
    recipient = normalize_address(record.recipient)
    if len(recipient) > 320 or not _ADDRESS.match(recipient):
        raise ValueError(f"`recipient` is not an e-mail address: {recipient[:100]!r}")
    sender = normalize_address(record.sender)
    if sender and (len(sender) > 320 or not _ADDRESS.match(sender)):
        raise ValueError(f"`sender` is not an e-mail address (nor empty, the null sender): {sender[:100]!r}")
    if record.size < 0:
        raise ValueError("`size` is negative")
    if record.num_attempts < 0:
        raise ValueError("`num_attempts` is negative")
    for name, value in (("campaign", campaign), ("tenant", tenant), ("egress_pool", record.egress_pool)):
        if value is not None and len(value) > _SHORT:
            raise ValueError(f"`{name}` is longer than {_SHORT} characters")
    message_id = header(_text_headers(record), "Message-ID")  # as observe finds it
    if message_id is not None and len(message_id) > _MESSAGE_ID:
        raise ValueError(f"the Message-ID header is longer than {_MESSAGE_ID} characters")
    response = record.response
    if record.type in RESPONSE_TYPES and response is not None and response.enhanced_code is not None:
        code = response.enhanced_code
        if (
            100 <= response.code <= 599
            and code.class_ in (2, 4, 5)
            and not (0 <= code.subject <= 999 and 0 <= code.detail <= 999)
        ):
            raise ValueError(f"`response.enhanced_code` {code.format()} is not an enhanced status code")
    return Admitted(message_uuid(record), recipient_domain(record.recipient), tenant, campaign)
