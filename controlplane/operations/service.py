"""Validating an operation, planning it against the mirror, and fanning it out to the selected nodes.

Everything that can be refused is refused before any node is contacted: bad targets, operations the MTA kind
does not have (set_priority, message-scoped operations on KumoMTA), unknown nodes. The operation is then stored
as ``running`` and carried out as a job: a task in this process on the embedded default, a saq job with Redis.
The job fans out to all nodes concurrently; one node failing is recorded for that node and does not stop the
others; the per-node outcomes are written as they arrive, so ``GET /api/v1/operations/{id}`` shows progress.
Every operation, dry runs included, is stored and audited.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import (
    ADAPTER_KINDS,
    MtaAdapter,
    StandingBounce,
    Suspension,
    Target,
    UnsupportedOperation,
    declare_asyncio,
    queue_matches,
)
from adapters.model import QueueOperationResult, QueueOperationType
from controlplane.audit.service import AuditLog
from controlplane.db.tables import NodeHoldRow, NodeQueuesRow, NodeRow, OperationRow
from controlplane.errors import InvalidInput, NotFound
from controlplane.fleet.schema import HoldKind
from controlplane.fleet.service import FleetService, NodeFault
from controlplane.fleet.state import hold_rows
from controlplane.operations.schema import NodeOutcome, OperationProgress, OperationRecord, OperationRequest
from controlplane.queues.service import QueueQueryService

Op = QueueOperationType
log = logging.getLogger("mtactl.operations")


def suspension_id_of(request: OperationRequest) -> str | None:
    """A resume may name the one suspension to lift (``metadata.suspension_id``) instead of a target."""
    if request.operation is not Op.resume:
        return None
    value = (request.metadata or {}).get("suspension_id")
    if value is not None and not (isinstance(value, str) and value):
        raise InvalidInput("metadata.suspension_id must be a suspension id (a string)", field="metadata")
    return value


def target_of(request: OperationRequest) -> Target:
    target = Target(
        domain=request.domain,
        tenant=request.tenant,
        campaign=request.campaign,
        routing_domain=request.routing_domain,
        queue_names=[request.queue_name] if request.queue_name else None,
    )
    if target.is_empty() and suspension_id_of(request) is None:
        # An empty target means "every queue" to kumod; that is never what a missing field should mean.
        raise InvalidInput("name the queues: domain, tenant, campaign, routing_domain or queue_name", field="domain")
    return target


def check(request: OperationRequest, nodes: list[NodeRow]) -> None:
    if request.message_ids:
        raise UnsupportedOperation("KumoMTA has no per-message operations; target queues instead")
    if request.operation is Op.set_priority:
        kinds = sorted({n.kind for n in nodes})
        raise UnsupportedOperation(f"set_priority: {', '.join(kinds) or 'these MTAs'} have no message priority")
    if request.operation is Op.rebind:
        data = (request.metadata or {}).get("data")
        if not isinstance(data, dict) or not data or not all(isinstance(v, str) for v in data.values()):
            raise InvalidInput('rebind needs metadata.data, e.g. {"data": {"tenant": "acme-warm"}}', field="metadata")
    if not nodes:
        raise InvalidInput("no nodes are registered (or selected)", field="nodes")
    without_adapter = sorted(n.name for n in nodes if n.kind not in ADAPTER_KINDS)
    if without_adapter:
        raise UnsupportedOperation(
            f"no adapter yet for the kind of {', '.join(without_adapter)}; leave them out with `nodes`"
        )


async def apply(adapter: MtaAdapter, request: OperationRequest, target: Target) -> str | None:
    """Carry out the operation on one node; returns the MTA's reference for what it created, if any."""
    reason = request.reason
    if request.operation is Op.suspend:
        return await adapter.suspend(target, reason=reason, duration=request.duration)
    if request.operation is Op.resume:
        wanted = suspension_id_of(request)
        lifted = [
            s.id
            for s in await adapter.list_suspensions()
            if s.id == wanted
            or (
                wanted is None
                and s.source == "kumod"  # the TSA daemon's end on their own; kumod cannot lift them
                and s.ready_queue is None
                and (s.domain, s.tenant, s.campaign) == (target.domain, target.tenant, target.campaign)
            )
        ]
        for ident in lifted:
            await adapter.resume(ident)
        return ",".join(lifted) or None
    if request.operation in (Op.bounce, Op.cancel, Op.purge):
        # cancel: failed administratively (AdminBounce, mirrored as "cancelled"); purge: the same, unlogged.
        return await adapter.bounce(
            target, reason=reason, duration=request.duration, suppress_logging=request.operation is Op.purge
        )
    if request.operation is Op.retry:
        await adapter.retry(target, reason=reason)
        return None
    if request.operation is Op.rebind:
        await adapter.rebind(target, reason=reason, data=dict((request.metadata or {})["data"]))
        return None
    raise UnsupportedOperation(f"{request.operation.value} is not supported")


# How often a running operation writes its per-node outcomes so far (each write is one small UPDATE).
PROGRESS_EVERY_SECONDS = 0.5
FINISHED = ("planned", "done", "partial", "failed", "interrupted")


class OperationService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        fleet: FleetService,
        queues: QueueQueryService,
        *,
        redis_url: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._fleet = fleet
        self._queues = queues
        self._redis_url = redis_url
        self._saq: Any = None
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def submit(
        self, request: OperationRequest, *, actor: str, wait: float | None = None, run_here: bool = False
    ) -> OperationRecord:
        """Validate, plan and start an operation; return it once finished or after ``wait`` seconds, whichever
        comes first (``wait=None``: until finished). ``run_here`` keeps the job in this process even with Redis
        (the CLI, which waits for it anyway)."""
        target = target_of(request)
        nodes = await self._fleet.select(request.nodes)
        check(request, nodes)
        affected, queue_names = await self._queues.queued_in(
            domain=request.domain,
            tenant_id=request.tenant,
            campaign_id=request.campaign,
            routing_domain=request.routing_domain,
            queue_name=request.queue_name,
        )
        now = datetime.now(UTC)
        plan = QueueOperationResult(
            success=True,
            operation=request.operation,
            affected_messages=affected,
            affected_queues=queue_names,
            timestamp=now,
        )
        planned_nodes: list[NodeOutcome] = []
        if request.dry_run:  # what each node would see, from its last sync: no node is contacted
            counts = await self._synced_counts([n.id for n in nodes], target)
            planned_nodes = [_outcome(n, request, counts[n.id], errors=[], at=now) for n in nodes]
        row = OperationRow(
            id=uuid.uuid4(),
            created_at=now,
            finished_at=now if request.dry_run else None,
            actor=actor,
            operation=request.operation.value,
            dry_run=request.dry_run,
            status="planned" if request.dry_run else "running",
            request=msgspec.to_builtins(request),
            result=msgspec.to_builtins(
                {
                    "total": plan,
                    "nodes": planned_nodes,
                    "node_ids": [str(n.id) for n in nodes],
                    "nodes_total": len(nodes),
                }
            ),
        )
        async with self._sessions.begin() as session:
            session.add(row)
            if request.dry_run:
                await self._audit_operation(session, row, target, nodes=[n.name for n in nodes], errors=[])
        if request.dry_run:
            return _record(row)
        if self._redis_url and not run_here:
            await self._enqueue(row.id)
        else:
            task = asyncio.create_task(self.execute(row.id))
            self._tasks[row.id] = task
            task.add_done_callback(functools.partial(self._forget_task, row.id))
        await self._wait(row.id, wait)
        return await self.get(row.id)

    async def _synced_counts(self, node_ids: list[uuid.UUID], target: Target) -> dict[uuid.UUID, dict[str, int]]:
        """Per node, the scheduled queues the target selects and their sizes, as the node's last sync read them."""
        async with self._sessions() as session:
            synced = (
                await session.execute(
                    select(NodeQueuesRow.node_id, NodeQueuesRow.scheduled).where(NodeQueuesRow.node_id.in_(node_ids))
                )
            ).all()
        counts: dict[uuid.UUID, dict[str, int]] = {node_id: {} for node_id in node_ids}
        for node_id, scheduled in synced:
            counts[node_id] = {name: n for name, n in scheduled.items() if queue_matches(target, name)}
        return counts

    def _forget_task(self, operation_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        self._tasks.pop(operation_id, None)
        if not task.cancelled():
            task.exception()  # retrieved so asyncio does not warn: execute() has logged and recorded it

    async def _enqueue(self, operation_id: uuid.UUID) -> None:
        from saq import Queue

        if self._saq is None:
            self._saq = Queue.from_url(self._redis_url or "", name="mtactl")
        # saq's default job timeout (10 s) is shorter than a fan-out to slow nodes with retries may take.
        await self._saq.enqueue("run_operation", operation_id=str(operation_id), timeout=900, retries=1)

    async def _wait(self, operation_id: uuid.UUID, wait: float | None) -> None:
        task = self._tasks.get(operation_id)
        if task is not None:
            await asyncio.wait({task}, timeout=wait)
            return
        # On a saq worker: watch the stored status (the worker writes it when done).
        deadline = None if wait is None else asyncio.get_running_loop().time() + wait
        while deadline is None or asyncio.get_running_loop().time() < deadline:
            async with self._sessions() as session:
                status = await session.scalar(select(OperationRow.status).where(OperationRow.id == operation_id))
            if status in FINISHED:
                return
            await asyncio.sleep(0.05)

    async def execute(self, operation_id: uuid.UUID) -> None:
        """Carry out a stored ``running`` operation on its nodes; a no-op for one already finished (so a job that
        is delivered twice does not act twice). Whatever goes wrong here is recorded on the operation: a failure
        must not leave it ``running`` for ever."""
        try:
            await self._execute(operation_id)
        except Exception as exc:
            log.exception("operation %s failed", operation_id)
            async with self._sessions.begin() as session:
                stored = await session.get(OperationRow, operation_id)
                if stored is not None and stored.status == "running":
                    stored.status = "failed"
                    stored.finished_at = datetime.now(UTC)
                    result = dict(stored.result or {})
                    total = dict(result.get("total") or {})
                    total["success"] = False
                    total["errors"] = [*(total.get("errors") or []), f"mtactl: {type(exc).__name__}: {exc}"]
                    stored.result = result | {"total": total}
            raise

    async def _execute(self, operation_id: uuid.UUID) -> None:
        declare_asyncio()
        async with self._sessions() as session:
            row = await session.get(OperationRow, operation_id)
        if row is None or row.status != "running":
            return
        request = msgspec.convert(row.request, OperationRequest)
        target = target_of(request)
        result: dict[str, Any] = dict(row.result or {})
        node_ids = [uuid.UUID(i) for i in result.get("node_ids", [])]
        async with self._sessions() as session:
            found = {r.id: r for r in (await session.scalars(select(NodeRow).where(NodeRow.id.in_(node_ids)))).all()}
        counts = await self._synced_counts(list(found), target)
        outcomes: list[NodeOutcome] = [
            _outcome_error(node_id, request, "the node was removed before the operation reached it")
            for node_id in node_ids
            if node_id not in found
        ]
        last_write = asyncio.get_running_loop().time()
        for finished in asyncio.as_completed([self._on_node(found[i], request, target, counts[i]) for i in found]):
            outcomes.append(await finished)
            now = asyncio.get_running_loop().time()
            if now - last_write >= PROGRESS_EVERY_SECONDS and len(outcomes) < len(node_ids):
                last_write = now
                await self._write_progress(operation_id, result, outcomes)
        await self._finish(row, request, target, result, outcomes, list(found.values()))

    async def _write_progress(
        self, operation_id: uuid.UUID, result: dict[str, Any], outcomes: list[NodeOutcome]
    ) -> None:
        async with self._sessions.begin() as session:
            stored = await session.get(OperationRow, operation_id)
            if stored is not None:
                stored.result = result | {"nodes": msgspec.to_builtins(outcomes)}

    async def _finish(
        self,
        row: OperationRow,
        request: OperationRequest,
        target: Target,
        result: dict[str, Any],
        outcomes: list[NodeOutcome],
        nodes: list[NodeRow],
    ) -> None:
        outcomes.sort(key=lambda o: o.node)
        errors = [f"{o.node}: {e}" for o in outcomes for e in (o.result.errors or [])]
        succeeded = sum(o.result.success for o in outcomes)
        plan = msgspec.convert(result["total"], QueueOperationResult)
        total = msgspec.structs.replace(plan, success=not errors, errors=errors or None)
        async with self._sessions.begin() as session:
            stored = await session.get(OperationRow, row.id)
            if stored is None:
                return
            stored.status = "done" if not errors else "partial" if succeeded else "failed"
            stored.finished_at = datetime.now(UTC)
            stored.result = result | msgspec.to_builtins({"total": total, "nodes": outcomes})
            await record_effects(session, request, target, outcomes)
            await self._audit_operation(session, stored, target, nodes=[n.name for n in nodes], errors=errors)

    async def _audit_operation(
        self, session: AsyncSession, row: OperationRow, target: Target, *, nodes: list[str], errors: list[str]
    ) -> None:
        await self._audit.record(
            actor=row.actor,
            action=f"operation.{row.operation}",
            target=msgspec.json.encode(target).decode(),
            reason=row.request.get("reason"),
            success=not errors,
            session=session,
            detail={
                "operation_id": str(row.id),
                "status": row.status,
                "dry_run": row.dry_run,
                "nodes": nodes,
                "errors": errors,
            },
        )

    async def mark_interrupted(self) -> int:
        """Operations left ``running`` by a process that stopped; called at start-up of the in-process runner,
        where no other process can be running them."""
        async with self._sessions.begin() as session:
            rows = (await session.scalars(select(OperationRow).where(OperationRow.status == "running"))).all()
            for row in rows:
                row.status = "interrupted"
                row.finished_at = datetime.now(UTC)
                await self._audit_operation(
                    session,
                    row,
                    target_of(msgspec.convert(row.request, OperationRequest)),
                    nodes=[],
                    errors=["interrupted: the process running it stopped; check the nodes before retrying"],
                )
        return len(rows)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self._saq is not None:
            await self._saq.disconnect()

    async def _on_node(
        self, row: NodeRow, request: OperationRequest, target: Target, queues: dict[str, int]
    ) -> NodeOutcome:
        """One node: the change, sent once (with the adapter's bounded retries). What it affects is read from the
        node's last sync rather than asked again: one round trip per node instead of two, which halves both the
        latency and the CPU of a fan-out (the sync job keeps the counts at most MTACTL_SYNC_INTERVAL_SECONDS
        old)."""
        now = datetime.now(UTC)
        reference = await self._fleet.with_adapter(row, lambda adapter: apply(adapter, request, target))
        if isinstance(reference, NodeFault):
            return _outcome(row, request, queues, errors=[reference.reason], at=now)
        return _outcome(row, request, queues, errors=[], at=now, reference=reference)

    async def recent(self, *, limit: int = 50) -> list[OperationRecord]:
        async with self._sessions() as session:
            rows = (
                await session.scalars(select(OperationRow).order_by(OperationRow.created_at.desc()).limit(limit))
            ).all()
        return [_record(r) for r in rows]

    async def get(self, operation_id: uuid.UUID) -> OperationRecord:
        async with self._sessions() as session:
            row = await session.get(OperationRow, operation_id)
        if row is None:
            raise NotFound(f"no operation {operation_id}", field="id")
        return _record(row)


async def record_effects(
    session: AsyncSession, request: OperationRequest, target: Target, outcomes: list[NodeOutcome]
) -> None:
    """Store the suspensions and bounces an operation created (and drop those it lifted) at once, so the queue
    listing shows them without waiting for the next sync, which then confirms or corrects them. One statement per
    step for the whole fleet: a fan-out to hundreds of nodes must not cost hundreds of round trips."""
    done = [(o, o.reference) for o in outcomes if o.result.success and o.reference]
    if not done:
        return
    if request.operation is Op.resume:  # the reference lists the suspensions lifted, comma-separated
        lifted = [(o.node_id, ident) for o, reference in done for ident in reference.split(",")]
        await session.execute(
            delete(NodeHoldRow).where(
                NodeHoldRow.kind == HoldKind.suspension.value,
                tuple_(NodeHoldRow.node_id, NodeHoldRow.hold_id).in_(lifted),
            )
        )
        return
    kind = HoldKind.suspension if request.operation is Op.suspend else HoldKind.bounce
    rows: list[dict[str, Any]] = []
    for o, reference in done:
        if kind is HoldKind.suspension:
            suspension = Suspension(
                id=reference,
                reason=request.reason,
                domain=target.domain,
                tenant=target.tenant,
                campaign=target.campaign,
                remaining=request.duration,
            )
            rows += hold_rows(o.node_id, [suspension], [])
        else:
            bounce = StandingBounce(
                id=reference,
                reason=request.reason,
                domain=target.domain,
                tenant=target.tenant,
                campaign=target.campaign,
                remaining=request.duration,
                total_bounced=o.result.affected_messages,
            )
            rows += hold_rows(o.node_id, [], [bounce])
    # A sync that ran meanwhile may have stored the same holds already: replace them.
    await session.execute(
        delete(NodeHoldRow).where(
            NodeHoldRow.kind == kind.value,
            tuple_(NodeHoldRow.node_id, NodeHoldRow.hold_id).in_([(o.node_id, reference) for o, reference in done]),
        )
    )
    await session.execute(insert(NodeHoldRow), rows)


def _outcome(
    node: NodeRow,
    request: OperationRequest,
    queues: dict[str, int],
    *,
    errors: list[str],
    at: datetime,
    reference: str | None = None,
) -> NodeOutcome:
    result = QueueOperationResult(
        success=not errors,
        operation=request.operation,
        affected_messages=sum(queues.values()),
        affected_queues=sorted(queues),
        errors=errors or None,
        timestamp=at,
    )
    return NodeOutcome(node=node.name, node_id=node.id, result=result, reference=reference)


def _outcome_error(node_id: uuid.UUID, request: OperationRequest, error: str) -> NodeOutcome:
    result = QueueOperationResult(
        success=False,
        operation=request.operation,
        affected_messages=0,
        affected_queues=[],
        errors=[error],
        timestamp=datetime.now(UTC),
    )
    return NodeOutcome(node=str(node_id), node_id=node_id, result=result)


def _record(row: OperationRow) -> OperationRecord:
    result: dict[str, Any] = row.result or {}
    nodes = msgspec.convert(result.get("nodes", []), list[NodeOutcome])
    return OperationRecord(
        id=row.id,
        created_at=row.created_at,
        finished_at=row.finished_at,
        actor=row.actor,
        status=row.status,
        dry_run=row.dry_run,
        request=msgspec.convert(row.request, OperationRequest),
        total=msgspec.convert(result["total"], QueueOperationResult) if result.get("total") else None,
        nodes=nodes,
        progress=OperationProgress(nodes_total=int(result.get("nodes_total", len(nodes))), nodes_done=len(nodes)),
    )
