"""Wire types and scope names for authentication."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta


class Scope(enum.StrEnum):
    """Seed 001's scopes plus ``events:ingest`` and ``fleet:manage``. ``admin`` implies every other scope."""

    email_send = "email:send"
    email_read = "email:read"
    queue_manage = "queue:manage"
    smtp_manage = "smtp:manage"
    analytics_read = "analytics:read"
    suppression_manage = "suppression:manage"
    admin = "admin"
    events_ingest = "events:ingest"
    fleet_manage = "fleet:manage"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the key's id and name, what it may do, and the tenant it is bound to (if any)."""

    key_id: uuid.UUID
    name: str
    scopes: frozenset[Scope]
    tenant_id: str | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.admin in self.scopes or scope in self.scopes

    @property
    def actor(self) -> str:
        return f"key:{self.name}"


class ApiKeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    scopes: Annotated[list[Scope], Meta(min_length=1)]
    tenant_id: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


class ApiKeyInfo(msgspec.Struct, kw_only=True):
    """A key as listed: never the secret, only its first characters for recognition."""

    id: uuid.UUID
    name: str
    key_prefix: str
    scopes: list[Scope]
    tenant_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKey(msgspec.Struct, kw_only=True):
    """Returned once, at creation: the only time the secret is ever shown."""

    key: str
    info: ApiKeyInfo
