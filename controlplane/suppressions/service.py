"""The suppression list: entries, their enforcement at each MTA, expiry, CSV import and export.

Enforcement, each MTA by its own means:

* MTAs with a suppression list of their own over their API (``Capabilities.suppression_list``: ZoneMTA's
  ``/suppressionlist``) carry every global entry in force; ``reconcile`` pushes what is missing and takes off
  what mtactl pushed and no longer applies (expired, removed), for every such node, each pass. Tenant entries are
  not pushed: such a list has no tenants, and one tenant's entry must not stop another tenant's mail.
* KumoMTA has no per-recipient admin call: its policy snippet (``mta_plugins/kumomta/mtactl_suppression.lua``)
  reads ``GET /api/v1/suppressions/export?format=kumomta`` on an interval and refuses suppressed recipients at
  reception.
* Messages already queued to a newly suppressed address are cancelled through the operations path (audited, actor
  ``suppression``) on the nodes that cancel per message and list their queue (ZoneMTA); the others are listed in
  the entry's ``held_messages``. Removing an entry says which of those (still queued) it released.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, delete, func, insert, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import MtaAdapter, UnsupportedOperation
from adapters.model import QueueOperationType, normalize_address
from adapters.registry import driver_for
from controlplane.audit.service import AuditLog
from controlplane.db.messages import IN_QUEUE
from controlplane.db.tables import (
    MessageRow,
    NodeMessageRow,
    NodeRow,
    SoftBounceRow,
    SuppressionPushRow,
    SuppressionRow,
)
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFound
from controlplane.fleet.service import FleetService, NodeFault
from controlplane.operations.schema import OperationRequest
from controlplane.operations.service import OperationService
from controlplane.pagination import decode_cursor, encode_cursor
from controlplane.settings import Settings
from controlplane.suppressions.schema import (
    EMAIL_RULE,
    ImportReport,
    RejectedRow,
    Suppression,
    SuppressionCreate,
    SuppressionDetail,
    SuppressionPage,
    SuppressionReason,
    SuppressionRemoval,
    SuppressionStats,
)
from controlplane.suppressions.store import C, active, entry_row, upsert, utc

log = logging.getLogger("mtactl.suppressions")
ENFORCER = "suppression"  # the actor of the operations enforcement runs
CSV_FIELDS = ("email", "reason", "tenant_id", "created_at", "expires_at", "source_event_id")
PUSHES_PER_PASS = 500  # per node: a large list reaches a node over a few passes, not in one burst
CONCURRENT_PUSHES = 8
MAX_IMPORT_REJECTIONS_SHOWN = 1000


class _Cursor(msgspec.Struct, array_like=True):
    created_at: datetime
    email: str
    scope_key: str


def _entry(row: Any) -> Suppression:
    return msgspec.convert(row, Suppression, from_attributes=True)


def _visible(tenant: str | None) -> Any:
    """What a key sees: a tenant-bound key its tenant's entries and the global ones (which apply to its mail too;
    read-only for it); an unbound key everything."""
    if tenant is None:
        return and_(True)
    return or_(C.tenant_id == tenant, C.tenant_id.is_(None))


# A push row's reference for an entry mtactl found on a node's list rather than made: never deleted by mtactl.
ADOPTED = "adopted:"


class SuppressionService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        fleet: FleetService,
        operations: OperationService,
        settings: Settings,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._fleet = fleet
        self._operations = operations
        self._settings = settings
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)

    # --- the entries ---------------------------------------------------------------------------------------

    def _scope(self, asked: str | None, bound: str | None) -> str | None:
        """The tenant an entry a key writes belongs to: a bound key's own (another is refused), else the one
        asked for (None: global)."""
        if bound is None:
            return asked
        if asked is not None and asked != bound:
            raise Forbidden("this API key is bound to another tenant", field="tenant_id")
        return bound

    async def add(self, data: SuppressionCreate, *, actor: str, tenant: str | None = None) -> SuppressionDetail:
        """Add one entry and enforce it; 409 when the address already has an entry in force in that scope."""
        scope = self._scope(data.tenant_id, tenant)
        email = normalize_address(data.email)
        now = self.now()
        expires = utc(data.expires_at) if data.expires_at is not None else None
        if expires is None and data.reason is SuppressionReason.soft_bounce:
            expires = now + timedelta(days=self._settings.soft_bounce_suppress_days)
        async with self._sessions.begin() as session:
            existing = await session.get(SuppressionRow, (email, scope or ""))
            if (
                existing is not None
                and existing.removed_at is None
                and (existing.expires_at is None or existing.expires_at > now)
            ):
                where = f"tenant {scope}" if scope else "globally"
                raise Conflict(f"{email} is already suppressed {where} ({existing.reason})", field="email")
            if existing is not None:
                await session.delete(existing)
                await session.flush()
            row = entry_row(
                email=email,
                tenant_id=scope,
                reason=data.reason.value,
                created_at=now,
                expires_at=expires,
                created_by=actor,
                note=data.note,
            )
            await session.execute(insert(SuppressionRow).values(row))
            await self._audit.record(
                actor=actor,
                action="suppression.add",
                success=True,
                target=email,
                reason=data.reason.value,
                detail={"tenant_id": scope, "expires_at": expires.isoformat() if expires else None},
                session=session,
            )
        await self.enforce(email, scope or "")
        await self.reconcile(emails=[email])
        return await self.get(email, tenant=tenant, scope=scope or "", including=scope or "")

    async def get(
        self, email: str, *, tenant: str | None = None, scope: str | None = None, including: str | None = None
    ) -> SuppressionDetail:
        """The address's entries in force the key sees (``including``: that scope's entry even if it has expired
        already, for the answer to its creation)."""
        address = normalize_address(email)
        now = self.now()
        applies = active(now)
        if including is not None:
            applies = or_(applies, and_(C.scope_key == including, C.removed_at.is_(None)))
        async with self._sessions() as session:
            rows = list(
                (
                    await session.scalars(
                        select(SuppressionRow)
                        .where(C.email == address, applies, _visible(tenant))
                        .order_by(C.scope_key, C.created_at)
                    )
                ).all()
            )
            if not rows:
                raise NotFound(f"{address} is not suppressed", field="email")
            first = next((r for r in rows if r.scope_key == scope), rows[0])
            pushed = (
                await session.scalars(
                    select(NodeRow.name)
                    .join(SuppressionPushRow, SuppressionPushRow.node_id == NodeRow.id)
                    .where(SuppressionPushRow.email == address.lower())
                    .order_by(NodeRow.name)
                )
            ).all()
        held = sorted({h for r in rows for h in (r.held_messages or [])})
        return SuppressionDetail(
            **msgspec.structs.asdict(_entry(first)),
            entries=[_entry(r) for r in rows],
            held_messages=[uuid.UUID(h) for h in held],
            cancel_operation_id=next((r.cancel_operation_id for r in rows if r.cancel_operation_id), None),
            pushed_to=list(pushed),
        )

    async def entries(
        self,
        *,
        tenant: str | None,
        tenant_id: str | None = None,
        scope: str | None = None,
        reason: SuppressionReason | None = None,
        search: str | None = None,
        domain: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SuppressionPage:
        """Entries in force, newest first, keyset-paged."""
        now = self.now()
        where: list[Any] = [active(now), _visible(tenant)]
        if tenant_id is not None and tenant is None:
            where.append(C.tenant_id == tenant_id)
        if scope == "global":
            where.append(C.tenant_id.is_(None))
        elif scope == "tenant":
            where.append(C.tenant_id.is_not(None))
        if reason is not None:
            where.append(C.reason == reason.value)
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(func.lower(C.email).like(f"%{escaped}%", escape="\\"))
        if domain:
            where.append(C.domain == domain.lower())
        if created_after is not None:
            where.append(C.created_at >= utc(created_after))
        if created_before is not None:
            where.append(C.created_at < utc(created_before))
        if cursor is not None:
            after = decode_cursor(cursor, _Cursor)
            # newest first: (created_at desc, email asc, scope_key asc)
            where.append(
                or_(
                    C.created_at < after.created_at,
                    and_(
                        C.created_at == after.created_at, tuple_(C.email, C.scope_key) > (after.email, after.scope_key)
                    ),
                )
            )
        statement = (
            select(SuppressionRow).where(*where).order_by(C.created_at.desc(), C.email, C.scope_key).limit(limit + 1)
        )
        async with self._sessions() as session:
            rows = list((await session.scalars(statement)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more:
            last = rows[-1]
            next_cursor = encode_cursor(_Cursor(last.created_at, last.email, last.scope_key))
        return SuppressionPage(data=[_entry(r) for r in rows], cursor=next_cursor, has_more=more)

    async def remove(
        self, email: str, *, actor: str, tenant: str | None = None, tenant_id: str | None = None
    ) -> SuppressionRemoval:
        """Lift the entry of this scope (a bound key: its tenant's; else ``tenant_id``'s, or the global one)."""
        address = normalize_address(email)
        scope = self._scope(tenant_id, tenant) or ""
        now = self.now()
        async with self._sessions.begin() as session:
            row = await session.get(SuppressionRow, (address, scope))
            if row is None or row.removed_at is not None or (row.expires_at is not None and row.expires_at <= now):
                if tenant is not None:
                    global_row = await session.get(SuppressionRow, (address, ""))
                    if global_row is not None and global_row.removed_at is None:
                        raise Forbidden(
                            f"{address} is suppressed globally: a tenant-bound key cannot lift a global entry",
                            field="email",
                        )
                raise NotFound(f"{address} has no entry in force here", field="email")
            removed = _entry(row)
            held = list(row.held_messages or [])
            row.removed_at = now
            row.removed_by = actor
            await self._audit.record(
                actor=actor,
                action="suppression.remove",
                success=True,
                target=address,
                detail={"tenant_id": row.tenant_id, "reason": row.reason},
                session=session,
            )
            released = await self._still_queued(session, held)
        await self.reconcile(emails=[address])
        return SuppressionRemoval(removed=[removed], released_messages=released)

    async def _still_queued(self, session: AsyncSession, ids: list[str]) -> list[uuid.UUID]:
        wanted = [uuid.UUID(i) for i in ids]
        found: list[uuid.UUID] = []
        for start in range(0, len(wanted), 500):
            found += (
                await session.scalars(
                    select(MessageRow.id).where(
                        MessageRow.id.in_(wanted[start : start + 500]), MessageRow.status.in_(IN_QUEUE)
                    )
                )
            ).all()
        return sorted(found)

    async def stats(self, *, tenant: str | None, tenant_id: str | None = None) -> SuppressionStats:
        now = self.now()
        where: list[Any] = [active(now), _visible(tenant)]
        if tenant_id is not None and tenant is None:
            where.append(C.tenant_id == tenant_id)
        async with self._sessions() as session:
            by_reason = {
                reason: int(n)
                for reason, n in (
                    await session.execute(select(C.reason, func.count()).where(*where).group_by(C.reason))
                ).all()
            }
            global_entries = int(await session.scalar(select(func.count()).where(*where, C.tenant_id.is_(None))) or 0)
            expiring = int(
                await session.scalar(
                    select(func.count()).where(*where, C.expires_at.is_not(None), C.expires_at <= now + timedelta(1))
                )
                or 0
            )
            recent = int(
                await session.scalar(select(func.count()).where(*where, C.created_at > now - timedelta(1))) or 0
            )
        total = sum(by_reason.values())
        return SuppressionStats(
            total=total,
            by_reason={r.value: by_reason.get(r.value, 0) for r in SuppressionReason},
            global_entries=global_entries,
            tenant_entries=total - global_entries,
            expiring_within_24h=expiring,
            created_last_24h=recent,
        )

    # --- import and export ---------------------------------------------------------------------------------

    async def import_csv(
        self,
        text: str,
        *,
        actor: str,
        tenant: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Rows ``email[,reason[,tenant_id[,created_at[,expires_at[,…]]]]]``, with or without the export's header.
        Bad rows are reported (row number, field) and the good ones kept; an address already in force in the same
        scope is left as it is, so importing a file twice adds nothing the second time."""
        rejected: list[RejectedRow] = []
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        now = self.now()
        reader = csv.reader(io.StringIO(text, newline=""))
        header: list[str] | None = None
        count = 0
        email_rule = re.compile(EMAIL_RULE)
        number = 0
        while True:
            number += 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a field beyond the csv module's size limit: that row only
                rejected.append(RejectedRow(row=number, field="row", message=f"not CSV: {exc}"))
                continue
            count = number
            if not fields or not any(f.strip() for f in fields):
                continue
            if number == 1 and fields and fields[0].strip().lower() == "email":
                header = [f.strip().lower() for f in fields]
                continue
            names = header or list(CSV_FIELDS)
            values = {name: (fields[i].strip() if i < len(fields) else "") for i, name in enumerate(names)}
            problem = self._import_problem(values, email_rule, tenant)
            if problem is not None:
                rejected.append(RejectedRow(row=number, field=problem[0], message=problem[1]))
                continue
            scope = self._scope(values.get("tenant_id") or None, tenant)
            reason = SuppressionReason(values.get("reason") or "manual")
            expires = _time(values.get("expires_at", ""))
            if expires is None and reason is SuppressionReason.soft_bounce:
                expires = now + timedelta(days=self._settings.soft_bounce_suppress_days)
            if expires is not None and expires <= now:
                rejected.append(RejectedRow(row=number, field="expires_at", message="has already passed"))
                continue
            email = normalize_address(values["email"])
            rows.setdefault(
                (email, scope or ""),
                entry_row(
                    email=email,
                    tenant_id=scope,
                    reason=reason.value,
                    created_at=_time(values.get("created_at", "")) or now,
                    expires_at=expires,
                    created_by=actor,
                    source_event_id=values.get("source_event_id") or None,
                ),
            )
            if progress is not None and number % 500 == 0:
                progress(number)
        async with self._sessions.begin() as session:
            present: set[tuple[str, str]] = set()
            keys = list(rows)
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                present.update(
                    (e, s)
                    for e, s in (
                        await session.execute(
                            select(C.email, C.scope_key).where(tuple_(C.email, C.scope_key).in_(chunk), active(now))
                        )
                    ).all()
                )
            fresh = [rows[k] for k in keys if k not in present]
            # An import is the operator's word now: it replaces removed or expired entries of these addresses.
            for start in range(0, len(fresh), 500):
                chunk = [(r["email"], r["scope_key"]) for r in fresh[start : start + 500]]
                await session.execute(
                    delete(SuppressionRow).where(
                        tuple_(C.email, C.scope_key).in_(chunk), C.removed_at.is_not(None) | (C.expires_at <= now)
                    )
                )
            await upsert(session, fresh)
            await self._audit.record(
                actor=actor,
                action="suppression.import",
                success=True,
                detail={"rows": count, "added": len(fresh), "rejected": len(rejected)},
                session=session,
            )
        if progress is not None:
            progress(count)
        return ImportReport(
            rows=count,
            added=len(fresh),
            already_present=len(rows) - len(fresh),
            rejected=rejected[:MAX_IMPORT_REJECTIONS_SHOWN],
        )

    def _import_problem(self, values: dict[str, str], rule: Any, tenant: str | None) -> tuple[str, str] | None:
        email = values.get("email", "")
        if not email or len(email) > 320 or not rule.match(email):
            return "email", f"not an e-mail address: {email[:100]!r}"
        reason = values.get("reason") or "manual"
        if reason not in SuppressionReason.__members__:
            return "reason", f"{reason[:50]!r} is not one of {', '.join(SuppressionReason)}"
        asked = values.get("tenant_id") or None
        if asked is not None and len(asked) > 100:
            return "tenant_id", "longer than 100 characters"
        if tenant is not None and asked is not None and asked != tenant:
            return "tenant_id", "another tenant's (this key is bound to its own)"
        for name in ("created_at", "expires_at"):
            if values.get(name) and _time(values[name]) is None:
                return name, f"not an ISO-8601 date-time: {values[name][:50]!r}"
        if len(values.get("source_event_id", "")) > 64:
            return "source_event_id", "longer than 64 characters"
        return None

    async def export(self, *, tenant: str | None, tenant_id: str | None = None) -> list[Suppression]:
        now = self.now()
        where: list[Any] = [active(now), _visible(tenant)]
        if tenant_id is not None and tenant is None:
            where.append(C.tenant_id == tenant_id)
        async with self._sessions() as session:
            rows = (await session.scalars(select(SuppressionRow).where(*where).order_by(C.email, C.scope_key))).all()
        return [_entry(r) for r in rows]

    # --- enforcement ---------------------------------------------------------------------------------------

    async def enforce(self, email: str, scope_key: str) -> None:
        """Cancel the messages queued to a newly suppressed address where the MTA can cancel one message (through
        the operations path, actor ``suppression``), list the others as held, and mark the entry enforced."""
        now = self.now()
        async with self._sessions() as session:
            row = await session.get(SuppressionRow, (email, scope_key))
            if row is None or row.removed_at is not None or (row.expires_at is not None and row.expires_at <= now):
                return
            tenant = row.tenant_id
            query = select(MessageRow.id).where(MessageRow.recipient == email, MessageRow.status.in_(IN_QUEUE))
            if tenant is not None:
                query = query.where(MessageRow.tenant_id == tenant)
            queued = list((await session.scalars(query.limit(10_000))).all())
            placed = (
                await session.execute(
                    select(NodeMessageRow.message_uuid, NodeRow.id, NodeRow.kind)
                    .join(NodeRow, NodeRow.id == NodeMessageRow.node_id)
                    .where(NodeMessageRow.message_uuid.in_(queued[:1000]))
                )
            ).all()
        by_node: dict[uuid.UUID, list[uuid.UUID]] = {}
        for message, node_id, kind in placed:
            if _cancels_per_message(kind):
                by_node.setdefault(node_id, []).append(message)
        cancellable = sorted({m for ms in by_node.values() for m in ms})
        operation_id = None
        if cancellable:
            request = OperationRequest(
                operation=QueueOperationType.cancel,
                reason=f"suppressed ({row.reason}): {email}",
                message_ids=[str(m) for m in cancellable],
                nodes=[str(n) for n in sorted(by_node)],
            )
            try:
                record = await self._operations.submit(
                    request, actor=ENFORCER, tenant=tenant, wait=self._settings.operation_wait_seconds, run_here=True
                )
                operation_id = record.id
            except (InvalidInput, UnsupportedOperation) as exc:  # gone meanwhile, or no node takes it any more
                log.info("suppression of %s: nothing cancelled (%s)", email, exc)
                cancellable = []
        held = [str(m) for m in queued if m not in set(cancellable)]
        async with self._sessions.begin() as session:
            stored = await session.get(SuppressionRow, (email, scope_key))
            if stored is not None:
                stored.enforced_at = now
                stored.held_messages = held or None
                stored.cancel_operation_id = operation_id

    async def enforce_pending(self, limit: int = 100) -> int:
        """Entries the projection made that are not enforced yet (a pass takes ``limit`` of them)."""
        async with self._sessions() as session:
            keys = (
                await session.execute(
                    select(C.email, C.scope_key)
                    .where(C.enforced_at.is_(None), active(self.now()))
                    .order_by(C.created_at)
                    .limit(limit)
                )
            ).all()
        for email, scope_key in keys:
            await self.enforce(email, scope_key)
        return len(keys)

    async def expire(self) -> int:
        """Drop the entries past their expiry (queries already leave them out at that instant), and the soft
        bounces too old to count; the next ``reconcile`` lifts them at the MTAs."""
        now = self.now()
        window = timedelta(hours=self._settings.soft_bounce_window_hours)
        async with self._sessions.begin() as session:
            result: Any = await session.execute(
                delete(SuppressionRow).where(C.expires_at.is_not(None), C.expires_at <= now, C.removed_at.is_(None))
            )
            await session.execute(delete(SoftBounceRow).where(SoftBounceRow.event_at < now - window))
        return int(result.rowcount or 0)

    async def reconcile(self, emails: Iterable[str] | None = None) -> dict[str, str]:
        """Make every node with a suppression list of its own carry exactly the global entries in force (those
        mtactl pushed; ``emails``: only these addresses). Returns per node the error of a node that failed (it is
        retried on the next pass)."""
        nodes = [n for n in await self._fleet.select(None) if _has_list(n.kind)]
        if not nodes:
            return {}
        only = sorted(set(emails)) if emails is not None else None
        now = self.now()
        async with self._sessions() as session:
            wanted_query = select(C.email).where(active(now), C.tenant_id.is_(None))
            pushed_query = select(SuppressionPushRow)
            if only is not None:
                wanted_query = wanted_query.where(func.lower(C.email).in_([e.lower() for e in only]))
                pushed_query = pushed_query.where(SuppressionPushRow.email.in_([e.lower() for e in only]))
            # Keyed as the MTAs' lists key them: ZoneMTA lower-cases the whole address, so Bob@x and bob@x are
            # one entry there, pushed once, and lifted only when neither is in force.
            wanted = {email.lower() for email in (await session.scalars(wanted_query)).all()}
            pushed: dict[uuid.UUID, dict[str, str]] = {}
            for push in (await session.scalars(pushed_query)).all():
                pushed.setdefault(push.node_id, {})[push.email] = push.reference
        outcomes = await asyncio.gather(
            *(self._reconcile_node(node, wanted, pushed.get(node.id, {})) for node in nodes)
        )
        return {name: error for name, error in outcomes if error is not None}

    async def _reconcile_node(self, node: NodeRow, wanted: set[str], have: dict[str, str]) -> tuple[str, str | None]:
        """One node's list brought in step; (its name, its error or None). Nodes are reconciled concurrently: one
        that does not answer costs its retries once, not once per node."""
        now = self.now()
        missing = sorted(wanted - set(have))[:PUSHES_PER_PASS]
        stale = sorted(set(have) - wanted)
        if not missing and not stale:
            return node.name, None

        async def work(adapter: MtaAdapter) -> tuple[dict[str, str], list[str]]:
            listed = await adapter.suppression_entries() if missing else {}
            limit = asyncio.Semaphore(CONCURRENT_PUSHES)

            async def push(address: str) -> tuple[str, str]:
                async with limit:
                    # An address already on the node's list (put there by someone else) is adopted, not listed
                    # twice, and marked so: lifting mtactl's entry later leaves theirs on the list.
                    found = listed.get(address)
                    return address, ADOPTED + found if found else await adapter.suppress(address)

            async def lift(address: str) -> str:
                async with limit:
                    if not have[address].startswith(ADOPTED):
                        await adapter.unsuppress(have[address])
                    return address

            added = dict(await asyncio.gather(*(push(e) for e in missing)))
            lifted = list(await asyncio.gather(*(lift(e) for e in stale)))
            return added, lifted

        outcome = await self._fleet.with_adapter(node, work)
        if isinstance(outcome, NodeFault):
            log.warning("suppression list of %s not reconciled: %s", node.name, outcome.reason)
            return node.name, outcome.reason
        added, lifted = outcome
        async with self._sessions.begin() as session:
            for email, reference in added.items():
                session.add(SuppressionPushRow(node_id=node.id, email=email, reference=reference, pushed_at=now))
            if lifted:
                await session.execute(
                    delete(SuppressionPushRow).where(
                        SuppressionPushRow.node_id == node.id, SuppressionPushRow.email.in_(lifted)
                    )
                )
            await self._audit.record(
                actor=ENFORCER,
                action="suppression.push",
                success=True,
                target=node.name,
                detail={"added": sorted(added)[:100], "lifted": lifted[:100]},
                session=session,
            )
        return node.name, None

    async def run_pass(self) -> None:
        """The periodic job: expiry, enforcement of new automatic entries, the MTAs' lists."""
        await self.expire()
        await self.enforce_pending()
        await self.reconcile()


def _has_list(kind: str) -> bool:
    try:
        return driver_for(kind).capabilities().suppression_list
    except UnsupportedOperation:
        return False


def _cancels_per_message(kind: str) -> bool:
    try:
        driver_for(kind).capabilities().support(QueueOperationType.cancel, per_message=True)
    except UnsupportedOperation:
        return False
    return True


def _time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return utc(value if value.tzinfo else value.replace(tzinfo=UTC))


def csv_of(entries: Iterable[Suppression]) -> Iterable[str]:
    """The export: a header, then one row per entry (the import reads it back)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    yield out.getvalue()
    for e in entries:
        out.seek(0)
        out.truncate()
        writer.writerow(
            [
                e.email,
                e.reason.value,
                e.tenant_id or "",
                e.created_at.isoformat(),
                e.expires_at.isoformat() if e.expires_at else "",
                e.source_event_id or "",
            ]
        )
        yield out.getvalue()


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace("\t", "%09").replace("\n", "%0A").replace("\r", "%0D")


def kumomta_list(entries: Iterable[Suppression]) -> Iterable[str]:
    """The list as the KumoMTA snippet reads it: one line per entry, ``email<TAB>tenant<TAB>expires``, tenant
    empty for a global entry (``%``, tab and line breaks in it written as %25, %09, %0A, %0D), expires as Unix
    seconds or empty (the snippet stops applying an entry at that time itself, between refreshes)."""
    yield "# mtactl suppressions v1\n"
    for e in entries:
        expires = str(int(e.expires_at.timestamp())) if e.expires_at else ""
        yield f"{e.email}\t{_escape(e.tenant_id or '')}\t{expires}\n"
