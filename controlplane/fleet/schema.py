"""Wire types of the fleet registry. Credentials go in, never come out."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

NodeName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="letters, digits, . _ -")]
BaseUrl = Annotated[
    str,
    Meta(
        pattern=r"^https?://[^\s@/]+(/[^\s]*)?$",
        max_length=500,
        description="http(s)://host[:port][/prefix]; credentials never in the URL",
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


class NodeUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: NodeName | None = None
    base_url: BaseUrl | None = None
    credentials: NodeCredentials | None = None
    labels: Labels | None = None


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
