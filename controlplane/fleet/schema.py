"""Wire types of the fleet registry. Credentials go in, never come out."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

NodeName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="letters, digits, . _ -")]
BaseUrl = Annotated[
    str,
    Meta(
        # ASCII only, spelled out rather than with \s (Python's and JSON Schema's \s differ): a host name or IPv4
        # address that an HTTP client can always parse (no IDNA, no IPv6 literal), a port, a printable path.
        pattern=r"^https?://[A-Za-z0-9._-]+(:[0-9]{1,5})?(/[!-~]*)?$",
        max_length=500,
        description="http(s)://host[:port][/prefix], ASCII (punycode for IDNs); credentials never in the URL",
    ),
]
Labels = Annotated[dict[str, Annotated[str, Meta(max_length=100)]], Meta(max_length=20)]
MtaKind = Literal["kumomta", "zonemta"]


class NodeCredentials(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    scheme: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: str | None = None
    token: str | None = None


class NodeCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: NodeName
    kind: MtaKind
    base_url: BaseUrl
    credentials: NodeCredentials | None = None
    labels: Labels = msgspec.field(default_factory=dict)
    # KumoMTA's TSA daemon for this node (e.g. http://kumo-1.internal:8008): its automatic suspensions are read too.
    tsa_url: BaseUrl | None = None


class NodeUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: NodeName | None = None
    base_url: BaseUrl | None = None
    credentials: NodeCredentials | None = None
    labels: Labels | None = None
    tsa_url: BaseUrl | None = None


class Node(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    kind: MtaKind
    base_url: str
    auth_scheme: str
    labels: dict[str, str]
    created_at: datetime
    last_checked_at: datetime | None
    last_seen_at: datetime | None
    reachable: bool | None
    version: str | None
    health_detail: str | None
    last_synced_at: datetime | None = None  # when its queues, suspensions and bounces were last read
    sync_error: str | None = None  # why the last read failed (what was read before is kept)
    tsa_url: str | None = None


class HoldKind(enum.StrEnum):
    suspension = "suspension"
    bounce = "bounce"


class Hold(msgspec.Struct, kw_only=True):
    """A suspension or standing bounce on one node, as last read from it. ``id`` is the node's own id for it."""

    id: str
    kind: HoldKind
    node: str
    node_id: uuid.UUID
    reason: str
    domain: str | None
    tenant: str | None
    campaign: str | None
    routing_domain: str | None
    queue_names: list[str] | None  # the exact scheduled queues, for a hold mtactl made by queue names
    ready_queue: str | None  # set for a suspension of an egress path (ready queue) rather than scheduled queues
    source: str  # "kumod" (made through its admin API; can be lifted) or "tsa" (a shaping rule; ends when it expires)
    remaining: str | None  # time left, as the node reports it
    total_bounced: int  # bounces only: messages failed by it so far
    synced_at: datetime | None


class NodeSync(msgspec.Struct, kw_only=True):
    node: str
    node_id: uuid.UUID
    synced_at: datetime | None
    error: str | None
