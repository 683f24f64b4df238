"""Validating an operation, planning it against the mirror, and fanning it out to the selected nodes.

Everything that can be refused is refused before any node is contacted: bad targets, operations the MTA kind
does not have (set_priority, message-scoped operations on KumoMTA), unknown nodes. The fan-out then runs on all
nodes concurrently; one node failing is recorded for that node and does not stop the others. Every operation,
dry runs included, is stored and audited.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import MtaAdapter, MtaError, Target, UnsupportedOperation, queue_matches
from adapters.model import QueueOperationResult, QueueOperationType
from controlplane.audit.service import AuditLog
from controlplane.db.tables import NodeRow, OperationRow
from controlplane.errors import InvalidInput, NotFound
from controlplane.fleet.service import FleetService
from controlplane.operations.schema import NodeOutcome, OperationRecord, OperationRequest
from controlplane.queues.service import QueueQueryService

Op = QueueOperationType


def target_of(request: OperationRequest) -> Target:
    target = Target(
        domain=request.domain,
        tenant=request.tenant,
        campaign=request.campaign,
        routing_domain=request.routing_domain,
        queue_names=[request.queue_name] if request.queue_name else None,
    )
    if target.is_empty():
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


async def apply(adapter: MtaAdapter, request: OperationRequest, target: Target) -> str | None:
    """Carry out the operation on one node; returns the MTA's reference for what it created, if any."""
    reason = request.reason
    if request.operation is Op.suspend:
        return await adapter.suspend(target, reason=reason, duration=request.duration)
    if request.operation is Op.resume:
        wanted = (request.metadata or {}).get("suspension_id")
        lifted = [
            s.id
            for s in await adapter.list_suspensions()
            if s.id == wanted
            or (
                wanted is None
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


class OperationService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        fleet: FleetService,
        queues: QueueQueryService,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._fleet = fleet
        self._queues = queues

    async def run(self, request: OperationRequest, *, actor: str) -> OperationRecord:
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
        outcomes: list[NodeOutcome] = []
        if not request.dry_run:
            results = await asyncio.gather(*(self._on_node(row, request, target) for row in nodes))
            outcomes = list(results)
        errors = [f"{o.node}: {e}" for o in outcomes for e in (o.result.errors or [])]
        succeeded = sum(o.result.success for o in outcomes)
        status = "planned" if request.dry_run else ("done" if not errors else "partial" if succeeded else "failed")
        total = QueueOperationResult(
            success=not errors,
            operation=request.operation,
            affected_messages=affected,
            affected_queues=queue_names,
            errors=errors or None,
            timestamp=now,
        )
        record = OperationRecord(
            id=uuid.uuid4(),
            created_at=now,
            finished_at=datetime.now(UTC),
            actor=actor,
            status=status,
            dry_run=request.dry_run,
            request=request,
            total=total,
            nodes=outcomes,
        )
        async with self._sessions.begin() as session:
            session.add(
                OperationRow(
                    id=record.id,
                    created_at=record.created_at,
                    finished_at=record.finished_at,
                    actor=actor,
                    operation=request.operation.value,
                    dry_run=request.dry_run,
                    status=status,
                    request=msgspec.to_builtins(request),
                    result=msgspec.to_builtins({"total": total, "nodes": outcomes}),
                )
            )
            await self._audit.record(
                actor=actor,
                action=f"operation.{request.operation.value}",
                target=msgspec.json.encode(target).decode(),
                reason=request.reason,
                success=not errors,
                session=session,
                detail={
                    "operation_id": str(record.id),
                    "status": status,
                    "dry_run": request.dry_run,
                    "nodes": [n.name for n in nodes],
                    "errors": errors,
                },
            )
        return record

    async def _on_node(self, row: NodeRow, request: OperationRequest, target: Target) -> NodeOutcome:
        now = datetime.now(UTC)
        reference: str | None = None
        queues: list[str] = []
        errors: list[str] = []
        affected = 0
        adapter: MtaAdapter | None = None
        try:
            adapter = self._fleet.adapter(row)
            counts = await adapter.queue_counts()
            queues = sorted(q for q in counts.scheduled if queue_matches(target, q))
            affected = sum(counts.scheduled[q] for q in queues)
            reference = await apply(adapter, request, target)
        except (MtaError, InvalidInput) as exc:
            errors.append(getattr(exc, "message", str(exc)))
        finally:
            if adapter is not None:
                await adapter.close()
        result = QueueOperationResult(
            success=not errors,
            operation=request.operation,
            affected_messages=affected,
            affected_queues=queues,
            errors=errors or None,
            timestamp=now,
        )
        return NodeOutcome(node=row.name, node_id=row.id, result=result, reference=reference)

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


def _record(row: OperationRow) -> OperationRecord:
    result: dict[str, Any] = row.result or {}
    return OperationRecord(
        id=row.id,
        created_at=row.created_at,
        finished_at=row.finished_at,
        actor=row.actor,
        status=row.status,
        dry_run=row.dry_run,
        request=msgspec.convert(row.request, OperationRequest),
        total=msgspec.convert(result["total"], QueueOperationResult) if result.get("total") else None,
        nodes=msgspec.convert(result.get("nodes", []), list[NodeOutcome]),
    )
