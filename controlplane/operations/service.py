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
    MessageRef,
    MtaAdapter,
    OperationCall,
    OperationDone,
    OperationSupport,
    StandingBounce,
    Suspension,
    Target,
    TargetNotExpressible,
    UnsupportedOperation,
    declare_asyncio,
    express,
    queue_matches,
)
from adapters.model import QueueName, QueueOperationResult, QueueOperationType
from adapters.registry import driver_for
from controlplane.audit.service import AuditLog
from controlplane.db.effects import record_purge
from controlplane.db.tables import NodeHoldRow, NodeQueuesRow, NodeRow, OperationRow
from controlplane.errors import Forbidden, InvalidInput, NotFound
from controlplane.fleet.schema import HoldKind
from controlplane.fleet.service import FleetService, NodeFault
from controlplane.fleet.state import hold_rows, recorded_holds, refresh_queue_states
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
        # kumod compares queue-name parts exactly, and domains in its queue names are lower case.
        domain=request.domain.lower() if request.domain else None,
        tenant=request.tenant,
        campaign=request.campaign,
        routing_domain=request.routing_domain,
        queue_names=(request.queue_name,) if request.queue_name else None,
        everything=request.everything,
    )
    if request.everything and target.fields() != {"everything"}:
        raise InvalidInput(
            "`everything: true` targets every queue: give no other targeting field with it", field="everything"
        )
    if request.message_ids and target.fields() - {"tenant"}:
        # (a tenant only narrows the messages named to that tenant's: a tenant-bound key's request always has one)
        raise InvalidInput("message_ids name the messages: give no queue target with them", field="message_ids")
    if target.is_empty() and suspension_id_of(request) is None and not request.message_ids:
        # An empty target means "every queue" to kumod; that is never what a missing field should mean.
        raise InvalidInput(
            "name the queues: domain, tenant, campaign, routing_domain or queue_name (or everything: true)",
            field="domain",
        )
    if request.queue_name and not queue_matches(target, request.queue_name):
        raise TargetNotExpressible(
            f"queue_name {request.queue_name!r} does not satisfy the other targeting fields given with it",
            field="queue_name",
        )
    return target


def confine(request: OperationRequest, tenant: str | None) -> OperationRequest:
    """The request as a key bound to ``tenant`` may send it: its target lies inside that tenant whatever else it
    says (the tenant is filled in when absent), and nothing it asks for reaches another tenant's queues."""
    if tenant is None:
        return request
    if request.everything:
        raise Forbidden("a tenant-bound key cannot target every queue", field="everything")
    if request.tenant is not None and request.tenant != tenant:
        raise Forbidden("a tenant-bound key must target its own tenant", field="tenant")
    if request.queue_name is not None and QueueName.parse(request.queue_name).tenant != tenant:
        raise Forbidden("queue_name names a queue of another tenant", field="queue_name")
    data = (request.metadata or {}).get("data")
    if request.operation is Op.rebind and isinstance(data, dict):
        # kumod names a message's queue from these metadata keys ("queue" wins over the others): a bound key may
        # move messages only within its tenant, and touch no other key.
        if not set(data) <= REBIND_KEYS_FOR_TENANTS:
            raise Forbidden(
                f"a tenant-bound key may rebind only {', '.join(sorted(REBIND_KEYS_FOR_TENANTS))}", field="metadata"
            )
        queue = data.get("queue")
        if data.get("tenant", tenant) != tenant or (
            queue is not None and (not isinstance(queue, str) or QueueName.parse(queue).tenant != tenant)
        ):
            raise Forbidden("a tenant-bound key cannot rebind messages into another tenant", field="metadata")
    return msgspec.structs.replace(request, tenant=tenant)


REBIND_KEYS_FOR_TENANTS = frozenset({"campaign", "tenant", "routing_domain", "queue"})


def check(request: OperationRequest, target: Target, nodes: list[NodeRow]) -> dict[str, str]:
    """Refuse what no selected node can do, before any is contacted; returns, per node kind that cannot take
    this operation, why (those nodes are reported as refused, the others carry it out)."""
    if request.operation is Op.rebind:
        data = (request.metadata or {}).get("data")
        if not isinstance(data, dict) or not data or not all(isinstance(v, str) for v in data.values()):
            raise InvalidInput('rebind needs metadata.data, e.g. {"data": {"tenant": "acme-warm"}}', field="metadata")
    if request.message_ids is not None and not request.message_ids:
        raise InvalidInput("message_ids is empty: name the messages, or target queues instead", field="message_ids")
    if not nodes:
        raise InvalidInput("no nodes are registered (or selected)", field="nodes")
    refused: dict[str, str] = {}
    expressible_error: TargetNotExpressible | None = None
    for kind in sorted({n.kind for n in nodes}):
        try:
            support = driver_for(kind).capabilities().support(request.operation, per_message=bool(request.message_ids))
            if support.target_fields is not None and not request.message_ids and not target.is_empty():
                # Any list of queue names will do to test expressibility: a node's own are known when the job runs.
                express(target, support.target_fields, (), operation=request.operation.value)
        except TargetNotExpressible as exc:
            expressible_error = exc
            refused[kind] = exc.message
        except UnsupportedOperation as exc:
            refused[kind] = exc.message
    if len(refused) == len({n.kind for n in nodes}):
        # No selected node can take it: refused as a whole, naming the reason (the target's field when it is one).
        if expressible_error is not None and len(refused) == 1:
            raise expressible_error
        raise UnsupportedOperation("; ".join(refused[k] for k in sorted(refused)))
    return refused


def call_for(
    request: OperationRequest,
    target: Target,
    support: OperationSupport,
    synced: dict[str, int] | None,
    recorded: dict[str, tuple[str, ...]],
    messages: tuple[MessageRef, ...] | None,
) -> OperationCall:
    """What one node is sent: the target in the fields its MTA's request carries (``adapters.base.express``),
    or the messages named."""
    if messages is None and support.target_fields is not None:
        target = express(target, support.target_fields, synced, operation=request.operation.value)
    data = (request.metadata or {}).get("data") if request.operation is Op.rebind else None
    return OperationCall(
        operation=request.operation,
        target=target,
        reason=request.reason,
        duration=request.duration,
        data=dict(data) if isinstance(data, dict) else None,
        suspension_id=suspension_id_of(request),
        recorded=recorded,
        messages=messages,
    )


PLANNED_SHOWN = 100  # messages a dry run lists per node that lists its queue

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
        self,
        request: OperationRequest,
        *,
        actor: str,
        tenant: str | None = None,
        wait: float | None = None,
        run_here: bool = False,
    ) -> OperationRecord:
        """Validate, plan and start an operation; return it once finished or after ``wait`` seconds, whichever
        comes first (``wait=None``: until finished). ``tenant``: the caller's binding, which confines the target.
        ``run_here`` keeps the job in this process even with Redis (the CLI, which waits for it anyway)."""
        request = confine(request, tenant)
        target = target_of(request)
        if tenant is not None and (wanted := suspension_id_of(request)) is not None:
            await self._check_hold_tenant(wanted, tenant)
        nodes = await self._fleet.select(request.nodes)
        refused = check(request, target, nodes)
        messages: tuple[MessageRef, ...] | None = None
        message_uuids: list[uuid.UUID] | None = None
        if request.message_ids:
            messages, by_queue, message_uuids = await self._queues.messages_named(
                request.message_ids, tenant=request.tenant
            )
            affected, queue_names = len(messages), sorted(by_queue)
        else:
            affected, queue_names = await self._queues.queued_in(target)
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
            synced = await self._synced_queues([n.id for n in nodes])
            planned_nodes = [
                _refused(n, request, refused[n.kind], at=now)
                if n.kind in refused
                else _outcome(n, request, _matching(target, synced[n.id]), errors=[], at=now, note=_sync_note(n))
                for n in nodes
            ]
            planned_nodes = [await self._with_messages(o, target, message_uuids) for o in planned_nodes]
        row = OperationRow(
            id=uuid.uuid4(),
            created_at=now,
            tenant_id=tenant,
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
                    "refused_kinds": refused,
                    "messages": messages,
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

    async def _with_messages(
        self, outcome: NodeOutcome, target: Target, message_uuids: list[uuid.UUID] | None
    ) -> NodeOutcome:
        """A dry run's outcome for a node that lists its queue, with the messages it would act on as it last listed
        them (the rows of ``node_messages`` the target selects); other nodes' outcomes as they are."""
        if outcome.result.errors:
            return outcome
        found = await self._queues.listed_on(outcome.node_id, target, message_uuids, limit=PLANNED_SHOWN)
        if found is None:
            return outcome
        shown, total = found
        result = msgspec.structs.replace(outcome.result, affected_messages=total)
        return msgspec.structs.replace(outcome, result=result, messages=shown)

    async def _synced_queues(self, node_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int] | None]:
        """Per node, its scheduled queues and their sizes as its last sync read them (None: never synced)."""
        async with self._sessions() as session:
            synced = (
                await session.execute(
                    select(NodeQueuesRow.node_id, NodeQueuesRow.scheduled).where(NodeQueuesRow.node_id.in_(node_ids))
                )
            ).all()
        queues: dict[uuid.UUID, dict[str, int] | None] = dict.fromkeys(node_ids)
        for node_id, scheduled in synced:
            queues[node_id] = dict(scheduled)
        return queues

    async def _recorded_names(self, node_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, tuple[str, ...]]]:
        """Per node, the queue names mtactl suspended by name (kumod's listing does not show them)."""
        async with self._sessions() as session:
            recorded = await recorded_holds(session, node_ids)
        return {
            node_id: {
                hold_id: tuple(names)
                for (kind, hold_id), (_, _, names) in holds.items()
                if kind == HoldKind.suspension.value
            }
            for node_id, holds in recorded.items()
        }

    async def _check_hold_tenant(self, hold_id: str, tenant: str) -> None:
        """A tenant-bound key may lift by id only a suspension scoped to its tenant; another is "not found"."""
        async with self._sessions() as session:
            tenants = (
                await session.scalars(
                    select(NodeHoldRow.tenant).where(
                        NodeHoldRow.kind == HoldKind.suspension.value, NodeHoldRow.hold_id == hold_id
                    )
                )
            ).all()
        if not tenants or any(t != tenant for t in tenants):
            raise NotFound(f"no suspension {hold_id!r} of this tenant (as last synced)", field="metadata")

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
        request = _stored_request(row)
        target = target_of(request)
        result: dict[str, Any] = dict(row.result or {})
        node_ids = [uuid.UUID(i) for i in result.get("node_ids", [])]
        async with self._sessions() as session:
            found = {r.id: r for r in (await session.scalars(select(NodeRow).where(NodeRow.id.in_(node_ids)))).all()}
        synced = await self._synced_queues(list(found))
        recorded = await self._recorded_names(list(found))
        refused: dict[str, str] = result.get("refused_kinds") or {}
        messages = msgspec.convert(result.get("messages"), tuple[MessageRef, ...] | None)
        started = datetime.now(UTC)
        outcomes: list[NodeOutcome] = [
            _outcome_error(node_id, request, "the node was removed before the operation reached it")
            for node_id in node_ids
            if node_id not in found
        ]
        outcomes += [
            _refused(row, request, refused[row.kind], at=started) for row in found.values() if row.kind in refused
        ]
        last_write = asyncio.get_running_loop().time()
        for finished in asyncio.as_completed(
            [
                self._on_node(found[i], request, target, synced[i], recorded[i], messages)
                for i in found
                if found[i].kind not in refused
            ]
        ):
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
            verified_all = not any(o.note for o in outcomes)  # a node that left rows says so in its note
            if (
                request.operation is Op.purge
                and not errors
                and verified_all
                and not request.nodes
                and not request.message_ids
            ):
                # No record will tell the mirror (suppress_logging): every node purged the target, so say it here.
                await record_purge(session, target, note=f"purged by operation {row.id}: {request.reason}")
            if request.operation in (Op.suspend, Op.resume):  # only these change what the nodes hold suspended
                # The queues this operation targeted, on the nodes and in the mirror; the sync looks at all.
                touched = {q for o in outcomes for q in [*o.result.affected_queues, *(o.queue_names or ())]}
                await refresh_queue_states(session, touched | set(total.affected_queues))
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
                    _stored_target(row),
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
        self,
        row: NodeRow,
        request: OperationRequest,
        target: Target,
        synced: dict[str, int] | None,
        recorded: dict[str, tuple[str, ...]],
        messages: tuple[MessageRef, ...] | None,
    ) -> NodeOutcome:
        """One node: the change, sent once (with the adapter's bounded retries), in what this node's MTA
        understands (its driver's ``perform``). What it affects is read from the node's last sync rather than
        asked again, unless the adapter verified it: one round trip per node instead of two, which halves both
        the latency and the CPU of a fan-out (the sync job keeps the counts at most MTACTL_SYNC_INTERVAL_SECONDS
        old)."""
        now = datetime.now(UTC)
        sent: list[OperationCall] = []

        async def work(adapter: MtaAdapter) -> OperationDone | None:
            support = driver_for(row.kind).capabilities().support(request.operation, per_message=bool(messages))
            call = call_for(request, target, support, synced, recorded, messages)
            sent.append(call)
            if messages is None and call.target.queue_names == ():  # none of this node's queues is targeted
                return None
            return await adapter.perform(call)

        done = await self._fleet.with_adapter(row, work)
        exact = sent[0].target if sent else target
        queues = {} if messages is not None else _matching(exact, synced)
        if isinstance(done, NodeFault):
            return _outcome(row, request, queues, errors=[done.reason], at=now)
        note = "no queue on this node is targeted (as last synced): nothing was sent" if done is None else done.note
        return _outcome(
            row,
            request,
            queues,
            errors=[],
            at=now,
            reference=done.reference if done else None,
            note=note,
            sent=exact,
            affected=done.affected if done else None,
        )

    async def recent(self, *, limit: int = 50, tenant: str | None = None) -> list[OperationRecord]:
        """Newest first; with ``tenant``, only the operations keys bound to that tenant ran."""
        statement = select(OperationRow).order_by(OperationRow.created_at.desc()).limit(limit)
        if tenant is not None:
            statement = statement.where(OperationRow.tenant_id == tenant)
        async with self._sessions() as session:
            rows = (await session.scalars(statement)).all()
        return [_record(r) for r in rows]

    async def get(self, operation_id: uuid.UUID, *, tenant: str | None = None) -> OperationRecord:
        async with self._sessions() as session:
            row = await session.get(OperationRow, operation_id)
        if row is None or (tenant is not None and row.tenant_id != tenant):
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
        # By queue names where the node was sent names, else by the criteria it was sent.
        names = tuple(o.queue_names) if o.queue_names else None
        tenants = {QueueName.parse(n).tenant for n in names or ()}
        fields: dict[str, Any] = {
            "id": reference,
            "reason": request.reason,
            "domain": None if names else target.domain,
            "tenant": target.tenant or (tenants.pop() if len(tenants) == 1 else None),
            "campaign": None if names else target.campaign,
            "routing_domain": target.routing_domain,
            "queue_names": names,
            "remaining": request.duration,
        }
        if kind is HoldKind.suspension:
            rows += hold_rows(o.node_id, [Suspension(**fields)], [])
        else:
            rows += hold_rows(o.node_id, [], [StandingBounce(**fields, total_bounced=o.result.affected_messages)])
    now = datetime.now(UTC)
    for row in rows:
        row["recorded_at"] = now  # a sync that read the node before this moment keeps the row (fleet.state)
    # A sync that ran meanwhile may have stored the same holds already: replace them.
    await session.execute(
        delete(NodeHoldRow).where(
            NodeHoldRow.kind == kind.value,
            tuple_(NodeHoldRow.node_id, NodeHoldRow.hold_id).in_([(o.node_id, reference) for o, reference in done]),
        )
    )
    await session.execute(insert(NodeHoldRow), rows)


def _matching(target: Target, synced: dict[str, int] | None) -> dict[str, int]:
    return {name: n for name, n in (synced or {}).items() if queue_matches(target, name)}


def _outcome(
    node: NodeRow,
    request: OperationRequest,
    queues: dict[str, int],
    *,
    errors: list[str],
    at: datetime,
    reference: str | None = None,
    note: str | None = None,
    sent: Target | None = None,
    affected: int | None = None,
) -> NodeOutcome:
    result = QueueOperationResult(
        success=not errors,
        operation=request.operation,
        affected_messages=sum(queues.values()) if affected is None else affected,
        affected_queues=sorted(queues),
        errors=errors or None,
        timestamp=at,
    )
    return NodeOutcome(
        node=node.name,
        node_id=node.id,
        result=result,
        reference=reference,
        note=note,
        queue_names=list(sent.queue_names) if sent is not None and sent.queue_names else None,
    )


def _refused(node: NodeRow, request: OperationRequest, reason: str, *, at: datetime) -> NodeOutcome:
    """A node whose MTA cannot take this operation: nothing was sent to it, and the outcome says why."""
    outcome = _outcome(node, request, {}, errors=[f"refused: {reason}"], at=at)
    return msgspec.structs.replace(outcome, note="refused: nothing was sent to this node")


def _sync_note(node: NodeRow) -> str | None:
    """Why a dry run's counts for ``node`` may not be what it holds: "would affect 0" must not hide "unknown"."""
    if node.last_synced_at is None:
        return "never synced: what it holds is unknown (mtactl queue-summary --refresh, or POST /api/v1/nodes/sync)"
    since = f"counts as of its last good sync, {node.last_synced_at:%Y-%m-%d %H:%M:%S} UTC"
    if node.sync_error:
        return f"its last sync failed ({node.sync_error}); {since}"
    if node.reachable is False:
        return f"unreachable at its last health check ({node.health_detail or 'no answer'}); {since}"
    return None


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


def _stored_request(row: OperationRow) -> OperationRequest:
    """The request as stored. One stored before a constraint was added (an empty ``domain``, say) still reads:
    empty strings are absent values, and failing that only what identifies it is shown."""
    try:
        return msgspec.convert(row.request, OperationRequest)
    except msgspec.ValidationError:
        pass
    cleaned = {k: v for k, v in (row.request or {}).items() if v != ""}
    try:
        return msgspec.convert(cleaned, OperationRequest)
    except msgspec.ValidationError:
        reason = str((row.request or {}).get("reason") or "(unreadable request)")[:500]
        return OperationRequest(operation=Op(row.operation), reason=reason, dry_run=row.dry_run)


def _stored_target(row: OperationRow) -> Target:
    try:
        return target_of(_stored_request(row))
    except (InvalidInput, TargetNotExpressible):
        return Target()


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
        request=_stored_request(row),
        total=msgspec.convert(result["total"], QueueOperationResult) if result.get("total") else None,
        nodes=nodes,
        progress=OperationProgress(nodes_total=int(result.get("nodes_total", len(nodes))), nodes_done=len(nodes)),
    )
