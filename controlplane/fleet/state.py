"""What each node holds right now: queue counts, suspensions and standing bounces, read from the node and stored.

The sync job reads every node every ``MTACTL_SYNC_INTERVAL_SECONDS``. Operations record the suspensions and
bounces they create or lift as soon as the nodes answer (``operations.service.record_effects``), and lifting a
hold here re-reads its nodes, so the API shows an effect at once rather than one interval later. A node that
cannot be read keeps what was last read from it (with ``sync_error`` set): a dropped connection must not look
like an emptied queue.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

import msgspec
from sqlalchemy import ColumnElement, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import (
    MtaAdapter,
    MtaRefused,
    QueueCounts,
    StandingBounce,
    Suspension,
    UnsupportedOperation,
    declare_asyncio,
)
from adapters.model import MessageQueueStatus, QueueName, QueueState
from adapters.model.observation import MessageObservation
from controlplane.audit.service import AuditLog
from controlplane.db.messages import IN_QUEUE
from controlplane.db.messages import TABLE as MESSAGES
from controlplane.db.mirror import apply_observations
from controlplane.db.tables import MessageRow, NodeHoldRow, NodeMessageRow, NodeQueuesRow, NodeRow
from controlplane.errors import NotFound
from controlplane.fleet.schema import Hold, HoldKind, NodeSync
from controlplane.fleet.service import FleetService, NodeFault, stored_by_id

log = logging.getLogger("mtactl.fleet")
# What a node holds: its queue counts, suspensions and standing bounces, and, for an MTA that can list its queue
# (ZoneMTA), every message in it (None for one that cannot: KumoMTA's messages are known from its events).
NodeSnapshot = tuple[QueueCounts, list[Suspension], list[StandingBounce], list[MessageObservation] | None]

# A message a node listed and lists no more has left its queue. When no event says how (delivered, bounced or
# deleted all remove ZoneMTA's row), the mirror marks it with this reason, dated before the message was created:
# any event that says how it ended, arriving later, still wins (the later terminal outcome does).
VANISHED = "left the node's queue unobserved: no event said whether it was delivered, bounced or deleted"


class HoldCriteria(Protocol):
    """What decides which scheduled queues a hold applies to (a ``Hold``, a ``NodeHoldRow`` or a row of these)."""

    @property
    def ready_queue(self) -> str | None: ...
    @property
    def queue_names(self) -> list[str] | None: ...
    @property
    def domain(self) -> str | None: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def campaign(self) -> str | None: ...
    @property
    def routing_domain(self) -> str | None: ...


def hold_matches(hold: HoldCriteria, queue: QueueName, name: str | None = None) -> bool:
    """Whether a scheduled-queue hold applies to a (parsed) queue name: the queue must be one of the hold's queue
    names when it has them, else have every part the hold names (``QueueName.has``); a hold naming none applies
    to every queue, as an MTA reads a suspension naming nothing."""
    if hold.ready_queue is not None:
        return False
    if hold.queue_names:
        return (name if name is not None else queue.format()) in hold.queue_names
    return queue.has(domain=hold.domain, tenant=hold.tenant, campaign=hold.campaign, routing_domain=hold.routing_domain)


def _hold(row: NodeHoldRow, node: NodeRow) -> Hold:
    return Hold(
        id=row.hold_id,
        kind=HoldKind(row.kind),
        node=node.name,
        node_id=node.id,
        reason=row.reason,
        domain=row.domain,
        tenant=row.tenant,
        campaign=row.campaign,
        routing_domain=row.routing_domain,
        queue_names=row.queue_names,
        ready_queue=row.ready_queue,
        source=row.source,
        remaining=row.remaining,
        total_bounced=row.total_bounced,
        synced_at=node.last_synced_at,
    )


class FleetStateService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], audit: AuditLog, fleet: FleetService) -> None:
        self._sessions = sessions
        self._audit = audit
        self._fleet = fleet

    async def sync(self, node_ids: Iterable[uuid.UUID] | None = None) -> list[NodeSync]:
        """Read the given nodes (every node by default) concurrently and store what each holds."""
        declare_asyncio()
        async with self._sessions() as session:
            statement = select(NodeRow).order_by(NodeRow.name)
            if node_ids is not None:
                statement = statement.where(NodeRow.id.in_(list(node_ids)))
            rows = list((await session.scalars(statement)).all())
        read_at = datetime.now(UTC)
        snapshots = await asyncio.gather(*(self._read(row) for row in rows))
        now = datetime.now(UTC)
        outcomes = []
        async with self._sessions.begin() as session:
            stored_rows = await stored_by_id(session, [row.id for row in rows])
            recorded = await recorded_holds(session, [row.id for row in rows])
            for row, snapshot in zip(rows, snapshots, strict=True):
                stored = stored_rows.get(row.id)
                if stored is None:  # removed while we were reading it
                    continue
                if isinstance(snapshot, str):
                    stored.sync_error = snapshot
                    outcomes.append(NodeSync(node=row.name, node_id=row.id, synced_at=None, error=snapshot))
                    continue
                try:
                    async with session.begin_nested():  # what one node sent cannot fail the others' sync
                        await _replace(session, row.id, snapshot, read_at, recorded[row.id])
                        if snapshot[3] is not None:
                            await mirror_listing(session, row.id, snapshot[3])
                except DBAPIError as exc:
                    log.warning("storing what node %s holds failed: %s", row.name, exc.orig)
                    stored.sync_error = f"mtactl could not store what the node reported: {exc.orig}"[:2000]
                    outcomes.append(NodeSync(node=row.name, node_id=row.id, synced_at=None, error=stored.sync_error))
                    continue
                stored.last_synced_at, stored.sync_error = now, None
                outcomes.append(NodeSync(node=row.name, node_id=row.id, synced_at=now, error=None))
            await refresh_queue_states(session)
        return outcomes

    async def _read(self, row: NodeRow) -> NodeSnapshot | str:
        async def read(adapter: MtaAdapter) -> NodeSnapshot:
            counts, suspensions, bounces = await asyncio.gather(
                adapter.queue_counts(), adapter.list_suspensions(), adapter.list_bounces()
            )
            return counts, suspensions, bounces, await adapter.queued_messages()

        snapshot = await self._fleet.with_adapter(row, read)
        return snapshot.reason if isinstance(snapshot, NodeFault) else snapshot

    async def holds(self, kind: HoldKind | None = None, *, tenant: str | None = None) -> list[Hold]:
        """Holds as last synced; with ``tenant``, only those scoped to that tenant (a tenant-bound caller's)."""
        async with self._sessions() as session:
            statement = select(NodeHoldRow, NodeRow).join(NodeRow, NodeRow.id == NodeHoldRow.node_id)
            if kind is not None:
                statement = statement.where(NodeHoldRow.kind == kind.value)
            if tenant is not None:
                statement = statement.where(NodeHoldRow.tenant == tenant)
            rows = (await session.execute(statement.order_by(NodeRow.name, NodeHoldRow.hold_id))).all()
        return [_hold(hold, node) for hold, node in rows]

    async def lift(
        self, kind: HoldKind, hold_id: str, *, actor: str, reason: str | None = None, tenant: str | None = None
    ) -> list[Hold]:
        """Resume a suspension or cancel a standing bounce, on every node that holds it (ids are per node, but a
        hold created by one fan-out can share its id only by chance, so all holders are asked). With ``tenant``,
        only a hold scoped to that tenant can be lifted; others are "not found", as for any tenant-bound read."""
        async with self._sessions() as session:
            statement = (
                select(NodeHoldRow, NodeRow)
                .join(NodeRow, NodeRow.id == NodeHoldRow.node_id)
                .where(NodeHoldRow.kind == kind.value, NodeHoldRow.hold_id == hold_id)
            )
            if tenant is not None:
                statement = statement.where(NodeHoldRow.tenant == tenant)
            rows = (await session.execute(statement)).all()
        if not rows:
            raise NotFound(f"no {kind.value} {hold_id!r} on any node (as last synced)", field="id")
        if any(hold.source != "kumod" for hold, _ in rows):
            raise UnsupportedOperation(f"{hold_id} was made by the TSA daemon: it ends when it expires")
        holds = [_hold(hold, node) for hold, node in rows]
        errors = await asyncio.gather(*(self._lift_on(node, kind, hold_id) for _, node in rows))
        failed = [f"{node.name}: {error}" for (_, node), error in zip(rows, errors, strict=True) if error]
        await self._audit.record(
            actor=actor,
            action=f"{kind.value}.lift",
            target=hold_id,
            reason=reason,
            success=not failed,
            detail={"nodes": [node.name for _, node in rows], "errors": failed},
        )
        await self.sync(node.id for _, node in rows)
        if failed:  # the nodes that did lift it have; the message names the ones that did not
            raise MtaRefused("; ".join(failed), status=502)
        return holds

    async def _lift_on(self, node: NodeRow, kind: HoldKind, hold_id: str) -> str | None:
        async def lift(adapter: MtaAdapter) -> None:
            if kind is HoldKind.suspension:
                await adapter.resume(hold_id)
            else:
                await adapter.cancel_bounce(hold_id)

        done = await self._fleet.with_adapter(node, lift)
        return done.reason if isinstance(done, NodeFault) else None


# What mtactl recorded of a hold it made by queue names, which kumod's listing does not show:
# (tenant, routing_domain, queue_names), by node and by (kind, hold id).
RecordedHolds = dict[uuid.UUID, dict[tuple[str, str], tuple[str | None, str | None, list[str]]]]


async def recorded_holds(session: AsyncSession, node_ids: list[uuid.UUID]) -> RecordedHolds:
    """The holds mtactl made by queue names on these nodes, as it recorded them; one query for all the nodes."""
    h = NodeHoldRow
    rows = (
        await session.execute(
            select(h.node_id, h.kind, h.hold_id, h.tenant, h.routing_domain, h.queue_names).where(
                h.node_id.in_(node_ids)
            )
        )
    ).all()
    recorded: RecordedHolds = {node_id: {} for node_id in node_ids}
    for node_id, kind, hold_id, tenant, routing_domain, names in rows:
        if names:  # (a JSON null reads as None: IS NOT NULL would not filter it out)
            recorded[node_id][(kind, hold_id)] = (tenant, routing_domain, names)
    return recorded


async def _replace(
    session: AsyncSession,
    node_id: uuid.UUID,
    snapshot: NodeSnapshot,
    read_at: datetime,
    recorded: dict[tuple[str, str], tuple[str | None, str | None, list[str]]],
) -> None:
    counts, suspensions, bounces, _ = snapshot
    # kumod lists a hold made by queue names as one naming nothing: keep what mtactl recorded when it made it.
    if recorded:
        suspensions = [_restore(s, recorded.get((HoldKind.suspension.value, s.id))) for s in suspensions]
        bounces = [_restore(b, recorded.get((HoldKind.bounce.value, b.id))) for b in bounces]
    await session.execute(delete(NodeQueuesRow).where(NodeQueuesRow.node_id == node_id))
    listed = [s.id for s in suspensions] + [b.id for b in bounces]
    # A hold an operation recorded after this snapshot was read is not in it yet: keep it (the next sync lists it).
    await session.execute(
        delete(NodeHoldRow).where(
            NodeHoldRow.node_id == node_id,
            or_(
                NodeHoldRow.recorded_at.is_(None),
                NodeHoldRow.recorded_at <= read_at,
                NodeHoldRow.hold_id.in_(listed),
            ),
        )
    )
    session.add(NodeQueuesRow(node_id=node_id, scheduled=counts.scheduled, ready=counts.ready))
    holds = hold_rows(node_id, suspensions, bounces)
    if holds:
        await session.execute(insert(NodeHoldRow), holds)


HeldThing = TypeVar("HeldThing", Suspension, StandingBounce)


def _restore(hold: HeldThing, recorded: tuple[str | None, str | None, list[str] | None] | None) -> HeldThing:
    if recorded is None or hold.domain or hold.tenant or hold.campaign:
        return hold
    tenant, routing_domain, names = recorded
    return msgspec.structs.replace(hold, tenant=tenant, routing_domain=routing_domain, queue_names=tuple(names or ()))


def hold_rows(
    node_id: uuid.UUID, suspensions: Iterable[Suspension], bounces: Iterable[StandingBounce]
) -> list[dict[str, Any]]:
    """``node_holds`` rows for what a node holds (read by a sync, or just created by an operation)."""
    rows: list[dict[str, Any]] = [
        {
            "node_id": node_id,
            "kind": HoldKind.suspension.value,
            "hold_id": s.id,
            "reason": s.reason,
            "domain": s.domain,
            "tenant": s.tenant,
            "campaign": s.campaign,
            "routing_domain": s.routing_domain,
            "queue_names": list(s.queue_names) if s.queue_names is not None else None,
            "ready_queue": s.ready_queue,
            "source": s.source,
            "remaining": s.remaining,
            "total_bounced": 0,
        }
        for s in suspensions
    ]
    rows += [
        {
            "node_id": node_id,
            "kind": HoldKind.bounce.value,
            "hold_id": b.id,
            "reason": b.reason,
            "domain": b.domain,
            "tenant": b.tenant,
            "campaign": b.campaign,
            "routing_domain": b.routing_domain,
            "queue_names": list(b.queue_names) if b.queue_names is not None else None,
            "ready_queue": None,
            "source": "kumod",
            "remaining": b.remaining,
            "total_bounced": b.total_bounced,
        }
        for b in bounces
    ]
    return rows


async def refresh_queue_states(session: AsyncSession, queue_names: Iterable[str] | None = None) -> None:
    """Set ``queue_state`` of queued mirror rows from the suspensions the nodes hold now: ``suspended`` while one
    applies to the row's queue, ``active`` again once none does. Queues are ``queue_names`` (those an operation
    touched), by default those the nodes report and those the mirror marks suspended (a few thousand names, not a
    scan of the messages); only rows that change are written, and only queues some row shows suspended are
    looked at for release."""
    h = NodeHoldRow  # the criteria only, not whole ORM objects: there may be thousands of holds
    holds = cast(
        Sequence[HoldCriteria],
        (
            await session.execute(
                select(h.ready_queue, h.queue_names, h.domain, h.tenant, h.campaign, h.routing_domain).where(
                    h.kind == "suspension", h.ready_queue.is_(None)
                )
            )
        ).all(),
    )
    c = MessageRow
    # Queues some mirror row shows suspended (an index range: few rows): only these can need releasing.
    marked = set(
        (
            await session.scalars(select(c.queue_name).where(c.queue_state == QueueState.suspended.value).distinct())
        ).all()
    )
    names: set[str] = set(queue_names or ())
    if queue_names is None:
        for scheduled in (await session.scalars(select(NodeQueuesRow.scheduled))).all():
            names.update(scheduled)
        names |= marked
    suspended = sorted(n for n in names if any(hold_matches(h, QueueName.parse(n), n) for h in holds))
    queued = c.status.in_(IN_QUEUE)
    await _set_state(session, [queued, c.queue_state != QueueState.suspended.value], suspended, QueueState.suspended)
    released = sorted((names & marked) - set(suspended))
    await _set_state(session, [queued, c.queue_state == QueueState.suspended.value], released, QueueState.active)


async def _set_state(
    session: AsyncSession, where: list[ColumnElement[bool]], queue_names: Iterable[str], state: QueueState
) -> None:
    names = list(queue_names)
    for start in range(0, len(names), 500):  # bounded IN lists (SQLite's parameter limit)
        await session.execute(
            update(MessageRow)
            .where(*where, MessageRow.queue_name.in_(names[start : start + 500]))
            .values(queue_state=state.value)
            .execution_options(synchronize_session=False)
        )


async def mirror_listing(session: AsyncSession, node_id: uuid.UUID, listed: list[MessageObservation]) -> None:
    """Bring the mirror in line with what a node listed: messages it lacks are added, queued ones whose state
    changed (due, deferred, attempts) are updated unless an event said something newer, and those the node listed
    before and lacks in two listings in a row are marked gone (``VANISHED``). A listing only ever moves a message
    still in the queue: what the events said of a finished one stands.

    One listing can miss a row that is still there (ZoneMTA pages by offset over a queue that changes meanwhile),
    hence two. A gone mark is dated just before the message was created, so any event that says how it really
    ended, arriving later, replaces it (between final outcomes the later one wins)."""
    c = MessageRow
    n = NodeMessageRow
    current = {o.id: o for o in listed}
    previous = {
        row.message_uuid: row.missing_since
        for row in await session.execute(select(n.message_uuid, n.missing_since).where(n.node_id == node_id))
    }
    stored: dict[uuid.UUID, tuple[str, int, datetime | None]] = {}
    ids = list(current)
    for start in range(0, len(ids), 500):  # bounded IN lists (SQLite's parameter limit)
        rows = await session.execute(
            select(c.id, c.status, c.num_attempts, c.status_at).where(c.id.in_(ids[start : start + 500]))
        )
        stored.update((row_id, (status, attempts, at)) for row_id, status, attempts, at in rows)
    await apply_observations(session, [o for o in listed if o.id not in stored])
    now = datetime.now(UTC)
    changed = []
    for o in listed:
        status, attempts, at = stored.get(o.id, (None, 0, None))
        newer_event = at is not None and at > o.status_at
        if status in IN_QUEUE and not newer_event and (status != o.status.value or attempts < o.num_attempts):
            changed.append(
                {"id": o.id, "status": o.status.value, "status_at": o.status_at, "num_attempts": o.num_attempts}
            )
    await _update_queued(session, changed, updated_at=now)
    lacking = previous.keys() - current.keys()
    gone = sorted(i for i in lacking if previous[i] is not None)
    first_missed = sorted(i for i in lacking if previous[i] is None)
    back = sorted(i for i in current.keys() & previous.keys() if previous[i] is not None)
    for ids_, missing_since in ((first_missed, now), (back, None)):
        for start in range(0, len(ids_), 500):
            await session.execute(
                update(n)
                .where(n.node_id == node_id, n.message_uuid.in_(ids_[start : start + 500]))
                .values(missing_since=missing_since)
                .execution_options(synchronize_session=False)
            )
    for start in range(0, len(gone), 500):
        batch = gone[start : start + 500]
        created = await session.execute(select(c.id, c.created_at).where(c.id.in_(batch), c.status.in_(IN_QUEUE)))
        marks = []
        for row_id, created_at in created:
            before = created_at - timedelta(milliseconds=1)
            marks.append({"id": row_id, "status_at": before, "failure_at": before})
        await _update_queued(
            session,
            marks,
            status=MessageQueueStatus.cancelled.value,
            last_bounce_reason=VANISHED,
            updated_at=now,
        )
        await session.execute(delete(n).where(n.node_id == node_id, n.message_uuid.in_(batch)))
    new = [{"node_id": node_id, "message_uuid": i, "seen_at": now} for i in current.keys() - previous.keys()]
    if new:
        await session.execute(insert(n), new)


async def _update_queued(session: AsyncSession, rows: list[dict[str, Any]], **shared: Any) -> None:
    """Update the mirror rows still in the queue: each of ``rows`` names its ``id`` and its own values, ``shared``
    what every row gets. One statement executed for every row (executemany): one round trip per row cost about
    1 ms each (bench/zonemta_sync.py)."""
    if not rows:
        return
    table = MESSAGES.c  # the Core table: the ORM's bulk update by primary key takes other parameter names
    own = [name for name in rows[0] if name != "id"]
    await session.execute(
        update(MESSAGES)
        # (no IN list: an expanding one cannot be executed for many rows at once; bound names apart from the
        # columns', which SQLAlchemy keeps for its own SET parameters)
        .where(table.id == bindparam("row_id"), or_(*(table.status == status for status in IN_QUEUE)))
        .values(**{name: bindparam(f"new_{name}") for name in own}, **shared)
        .execution_options(synchronize_session=False),
        [{"row_id": row["id"], **{f"new_{name}": row[name] for name in own}} for row in rows],
    )
