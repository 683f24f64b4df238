"""API keys: creation, lookup, listing and revocation.

Keys look like ``mq_live_`` followed by 40 random URL-safe characters (240 bits). Only their SHA-256 digest is
stored. A slow password hash (bcrypt, argon2) protects guessable secrets; these are random and long, so a fast
digest is as safe, and it lets every request be authenticated with one indexed lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controlplane.audit.service import AuditLog
from controlplane.auth.schema import ApiKeyInfo, CreatedApiKey, Principal, Scope
from controlplane.db.engine import database_unavailable
from controlplane.db.tables import ApiKeyRow
from controlplane.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger("mtactl.auth")
KEY_PREFIX = "mq_live_"
DISPLAY_PREFIX_LENGTH = 12
# A verified key is trusted for this long before it is looked up again: revocation takes effect within it.
CACHE_SECONDS = 5.0
LAST_USED_GRANULARITY = timedelta(minutes=1)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    scopes: list[Scope] = []
    for value in values:
        value = value.strip()
        if not value:
            continue
        try:
            scopes.append(Scope(value))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInput(f"unknown scope {value!r}; known scopes: {known}", field="scopes") from None
    if not scopes:
        raise InvalidInput("at least one scope is required", field="scopes")
    return sorted(set(scopes))


# Scopes over what all tenants share; a key holding one is never bound to a tenant.
FLEET_WIDE_SCOPES = frozenset({Scope.admin, Scope.fleet_manage})


class VerifiedKeys:
    """Ingest keys the database has vouched for, kept on disk (beside the spool) so that a service restarted while
    the database is away still knows them and ingestion goes on spooling. It holds what the database holds (the
    SHA-256 digest, name, scopes, tenant), is consulted only when the database cannot be, and forgets a key as
    soon as the database no longer vouches for it (revoked, deleted)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._keys = msgspec.json.decode(path.read_bytes(), type=dict[str, Principal])
        except FileNotFoundError:
            self._keys = {}
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            self._keys = {}

    def get(self, key_hash: str) -> Principal | None:
        return self._keys.get(key_hash)

    async def vouched(self, key_hash: str, principal: Principal | None) -> None:
        """Record what the database just said about a key (None: it does not know it, or it is revoked)."""
        if principal is not None and not principal.allows(Scope.events_ingest):
            principal = None  # the rest of the API needs the database anyway: nothing to remember
        if self._keys.get(key_hash) == principal:
            return
        if principal is None:
            self._keys.pop(key_hash, None)
        else:
            self._keys[key_hash] = principal
        try:
            await asyncio.to_thread(self._save, msgspec.json.encode(self._keys))
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)

    def forget_all(self, key_hashes: Iterable[str]) -> None:
        for key_hash in key_hashes:
            self._keys.pop(key_hash, None)
        try:
            self._save(msgspec.json.encode(self._keys))
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)

    def _save(self, content: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)


class ApiKeyService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], audit: AuditLog, verified: VerifiedKeys | None = None
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._verified = verified

    async def create(
        self, *, name: str, scopes: Iterable[str], tenant_id: str | None = None, actor: str = "cli"
    ) -> CreatedApiKey:
        checked = parse_scopes(scopes)
        if not name.strip() or len(name) > 100:
            raise InvalidInput("name must be 1-100 characters", field="name")
        if tenant_id is not None and not 0 < len(tenant_id) <= 100:
            raise InvalidInput("tenant must be 1-100 characters", field="tenant_id")
        fleet_wide = sorted(s.value for s in checked if s in FLEET_WIDE_SCOPES)
        if tenant_id is not None and fleet_wide:
            # What these scopes reach is shared by every tenant (keys, nodes, dead letters): never tenant-bound.
            raise InvalidInput(f"{', '.join(fleet_wide)} cannot be bound to a tenant", field="tenant_id")
        key = KEY_PREFIX + secrets.token_urlsafe(30)
        row = ApiKeyRow(
            id=uuid.uuid4(),
            name=name.strip(),
            key_prefix=key[:DISPLAY_PREFIX_LENGTH],
            key_hash=digest(key),
            scopes=[s.value for s in checked],
            tenant_id=tenant_id,
            created_at=datetime.now(UTC),
        )
        async with self._sessions.begin() as session:
            session.add(row)
            await self._audit.record(
                actor=actor,
                action="api_key.create",
                target=str(row.id),
                detail={"name": row.name, "scopes": row.scopes, "tenant_id": tenant_id},
                success=True,
                session=session,
            )
        return CreatedApiKey(key=key, info=_info(row))

    async def list(self) -> list[ApiKeyInfo]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))).all()
        return [_info(r) for r in rows]

    async def revoke(self, key_ref: str, *, actor: str = "cli") -> ApiKeyInfo:
        """Revoke by id, display prefix or name; an ambiguous reference is refused rather than guessed."""
        async with self._sessions.begin() as session:
            rows = (await session.scalars(select(ApiKeyRow))).all()
            matches = [r for r in rows if key_ref in (str(r.id), r.key_prefix, r.name)]
            if not matches:
                raise NotFound(f"no API key matches {key_ref!r}", field="key")
            if len(matches) > 1:
                # A well-formed reference that the current keys make ambiguous: a clash with state, not bad input.
                raise Conflict(f"{key_ref!r} matches {len(matches)} keys; use the id", field="key")
            row = matches[0]
            if row.revoked_at is not None:
                # Saying nothing would read as "revoked now"; a caller revoking a key it thinks live should know.
                when = row.revoked_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                raise Conflict(f"API key {row.name!r} ({row.id}) was already revoked at {when}", field="key")
            row.revoked_at = datetime.now(UTC)
            await self._audit.record(
                actor=actor, action="api_key.revoke", target=str(row.id), success=True, session=session
            )
        self._cache.clear()
        if self._verified is not None:
            self._verified.forget_all([row.key_hash])
        return _info(row)

    async def authenticate(self, key: str) -> Principal | None:
        if not key.startswith(KEY_PREFIX):
            return None
        key_hash = digest(key)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            principal = await self._lookup(key_hash)
        except Exception as exc:
            # While the database is unreachable, a key verified before keeps working (ingestion must go on
            # spooling): by this process, or by an earlier one for ingest keys (``VerifiedKeys``). A key never
            # verified cannot be checked, and the error propagates (see the guard for what the client gets).
            if database_unavailable(exc):
                if cached is not None:
                    return cached[1]
                remembered = self._verified.get(key_hash) if self._verified is not None else None
                if remembered is not None:
                    return remembered
            raise
        if len(self._cache) > 10_000:  # bound memory against floods of random keys
            self._cache.clear()
        self._cache[key_hash] = (now + CACHE_SECONDS, principal)
        if self._verified is not None and (principal is not None or self._verified.get(key_hash) is not None):
            await self._verified.vouched(key_hash, principal)
        return principal

    async def _lookup(self, key_hash: str) -> Principal | None:
        async with self._sessions() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))
            if row is None or row.revoked_at is not None:
                return None
            now = datetime.now(UTC)
            if row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY:
                await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == row.id).values(last_used_at=now))
                await session.commit()
        return Principal(
            key_id=row.id,
            name=row.name,
            scopes=frozenset(Scope(s) for s in row.scopes if s in Scope._value2member_map_),
            tenant_id=row.tenant_id,
        )


def _info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        key_prefix=row.key_prefix,
        scopes=[Scope(s) for s in row.scopes],
        tenant_id=row.tenant_id,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
