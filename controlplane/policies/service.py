"""Throttling rules: stored, evaluated against the rollups every ``MTACTL_POLICY_INTERVAL_SECONDS``, and acted on
through the operations path (``OperationService.submit``, actor ``policy:<name>``: audited, listed as operations).

One evaluation (``evaluate``):

1. every open decision is looked at first: one whose suspensions are all gone from the nodes before its end was
   lifted by someone else (``lifted_by: operator``), and the rule backs off that value for its duration; one whose
   end has come is lifted by resuming exactly the suspensions it made (``lifted_by: policy``);
2. every rule then measures each value of its scope over its window, counting only minutes after the last lift
   for that value (so the burst that tripped it does not trip it again), and decides for each value that crosses
   its threshold and has no open decision and no back-off.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import MtaError
from adapters.model import QueueOperationType
from adapters.sources import BOUNCED_TYPES, DEFERRED_TYPES, DELIVERED_TYPES
from controlplane.audit.service import AuditLog
from controlplane.db.tables import NodeHoldRow, NodeRow, PolicyDecisionRow, PolicyMatchRow, PolicyRow
from controlplane.errors import Conflict, InvalidInput, MtactlError, NotFound
from controlplane.fleet.schema import HoldKind
from controlplane.operations.duration import parse_duration
from controlplane.operations.schema import OperationRecord, OperationRequest
from controlplane.operations.service import OperationService
from controlplane.pagination import decode_cursor, encode_cursor
from controlplane.policies.patterns import check_pattern
from controlplane.policies.schema import (
    Decision,
    DecisionCursor,
    DecisionList,
    LiftedBy,
    Metric,
    Mode,
    Policy,
    PolicyInput,
    PolicyList,
    PolicyPatch,
    PolicyScope,
)
from controlplane.projections.rollups import ROLLUPS, minute_of

log = logging.getLogger("mtactl.policies")
MAX_WINDOW = timedelta(days=7)
ATTEMPTS = (*DELIVERED_TYPES, *BOUNCED_TYPES, *DEFERRED_TYPES)
FAILED = {Metric.bounce_rate: BOUNCED_TYPES, Metric.deferral_rate: DEFERRED_TYPES}


def window_minutes(text: str) -> int:
    try:
        length = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="window") from None
    if length < timedelta(minutes=1) or length > MAX_WINDOW:
        raise InvalidInput("window must be from 1m to 7d", field="window")
    return math.ceil(length.total_seconds() / 60)


def hold_length(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="duration") from None


def check_rule(rule: PolicyInput) -> PolicyInput:
    """The rule as stored (domains lower case), or ``InvalidInput`` naming the field at fault."""
    window_minutes(rule.window)
    hold_length(rule.duration)
    if rule.metric is Metric.response_match:
        if rule.pattern is None:
            raise InvalidInput("a response_match rule needs a pattern (a regular expression)", field="pattern")
        check_pattern(rule.pattern)
    else:
        if rule.pattern is not None:
            raise InvalidInput(f"pattern is for response_match rules, not {rule.metric}", field="pattern")
        if rule.threshold > 1:
            raise InvalidInput(f"{rule.metric} is a rate: its threshold is from 0 to 1 (0.3 = 30 %)", field="threshold")
    if rule.threshold <= 0:
        raise InvalidInput("threshold must be above 0: a rule at 0 would trip on nothing at all", field="threshold")
    match = rule.match
    if match is not None:
        if set(match) != {rule.scope.value}:
            raise InvalidInput(
                f"match narrows the rule's own scope: give {{{rule.scope.value!r}: …}} only", field="match"
            )
        if rule.scope is PolicyScope.domain:
            match = {k: v.lower() for k, v in match.items()}
    if rule.mode is Mode.enforce and rule.scope is PolicyScope.egress_source:
        raise InvalidInput(
            "an egress_source rule can only observe: the operations API cannot target an egress source's queues",
            field="mode",
        )
    return msgspec.structs.replace(rule, match=match)


def _policy(row: PolicyRow) -> Policy:
    return msgspec.convert(
        {c: getattr(row, c) for c in Policy.__struct_fields__}, Policy, from_attributes=True, strict=False
    )


def _decision(row: PolicyDecisionRow) -> Decision:
    return Decision(
        id=row.id,
        policy_id=row.policy_id,
        policy_name=row.policy_name,
        scope=PolicyScope(row.scope),
        scope_value=row.scope_value,
        action=row.action,  # type: ignore[arg-type]
        mode=Mode(row.mode),
        metric_value=row.metric_value,
        events=row.events,
        decided_at=row.decided_at,
        until=row.until,
        operation_id=row.operation_id,
        lifted_at=row.lifted_at,
        lifted_by=LiftedBy(row.lifted_by) if row.lifted_by else None,
        lift_operation_ids=[uuid.UUID(i) for i in row.lift_operation_ids] if row.lift_operation_ids else None,
        note=row.note,
    )


class PolicyService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], audit: AuditLog, operations: OperationService
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._operations = operations

    # The rules.

    async def create(self, rule: PolicyInput, *, actor: str, now: datetime | None = None) -> Policy:
        rule = check_rule(rule)
        now = now or datetime.now(UTC)
        row = PolicyRow(id=uuid.uuid4(), created_at=now, updated_at=now, **msgspec.to_builtins(rule))
        try:
            async with self._sessions.begin() as session:
                session.add(row)
                await session.flush()
                await self._audit_rule(session, "policy.create", row, actor)
        except IntegrityError:
            raise Conflict(f"a policy named {rule.name!r} exists already", field="name") from None
        return _policy(row)

    async def list_all(self) -> PolicyList:
        async with self._sessions() as session:
            rows = (await session.scalars(select(PolicyRow).order_by(PolicyRow.name))).all()
        return PolicyList(data=[_policy(r) for r in rows])

    async def get(self, ident: str) -> Policy:
        async with self._sessions() as session:
            return _policy(await self._find(session, ident))

    async def update(self, ident: str, patch: PolicyPatch, *, actor: str, now: datetime | None = None) -> Policy:
        changes = {k: v for k, v in msgspec.structs.asdict(patch).items() if v is not None}
        try:
            async with self._sessions.begin() as session:
                row = await self._find(session, ident)
                current = {
                    k: v for k, v in msgspec.to_builtins(_policy(row)).items() if k in PolicyInput.__struct_fields__
                }
                merged = msgspec.convert(current | msgspec.to_builtins(changes), PolicyInput)
                if "metric" in changes and changes["metric"] is not Metric.response_match and "pattern" not in changes:
                    merged = msgspec.structs.replace(merged, pattern=None)
                checked = check_rule(merged)
                for key, value in msgspec.to_builtins(checked).items():
                    setattr(row, key, value)
                row.updated_at = now or datetime.now(UTC)
                await session.flush()
                await self._audit_rule(session, "policy.update", row, actor, detail={"changed": sorted(changes)})
        except IntegrityError:
            raise Conflict(f"a policy named {patch.name!r} exists already", field="name") from None
        return _policy(row)

    async def delete(self, ident: str, *, actor: str) -> None:
        """The rule and its match counts go; its decisions stay (history), and an open one is still lifted at its
        end by the evaluation."""
        async with self._sessions.begin() as session:
            row = await self._find(session, ident)
            await session.execute(delete(PolicyMatchRow).where(PolicyMatchRow.policy_id == row.id))
            await self._audit_rule(session, "policy.delete", row, actor)
            await session.delete(row)

    async def _find(self, session: AsyncSession, ident: str) -> PolicyRow:
        """By id or by name (the path's ``{policy}``)."""
        if len(ident) > 100:
            raise NotFound(f"no policy {ident[:100]!r}…", field="policy")
        try:
            row = await session.get(PolicyRow, uuid.UUID(ident))
        except ValueError:
            row = await session.scalar(select(PolicyRow).where(PolicyRow.name == ident))
        if row is None:
            raise NotFound(f"no policy {ident!r}", field="policy")
        return row

    async def _audit_rule(
        self, session: AsyncSession, action: str, row: PolicyRow, actor: str, detail: dict[str, Any] | None = None
    ) -> None:
        await self._audit.record(
            actor=actor,
            action=action,
            target=f"policy:{row.name}",
            reason=None,
            success=True,
            session=session,
            detail={"policy_id": str(row.id), "mode": row.mode, **(detail or {})},
        )

    # The decisions.

    async def decisions(
        self,
        *,
        policy: str | None = None,
        open_only: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> DecisionList:
        offset = decode_cursor(cursor, DecisionCursor).offset if cursor else 0
        d = PolicyDecisionRow
        statement = select(d).order_by(d.decided_at.desc(), d.id)
        async with self._sessions() as session:
            if policy is not None:
                # A filter: an id is taken as it is (a deleted rule's decisions stay listed), a name looked up.
                try:
                    wanted = uuid.UUID(policy)
                except ValueError:
                    wanted = (await self._find(session, policy)).id
                statement = statement.where(d.policy_id == wanted)
            if open_only:
                statement = statement.where(d.lifted_at.is_(None))
            rows = (await session.scalars(statement.offset(offset).limit(limit + 1))).all()
        more = len(rows) > limit
        return DecisionList(
            data=[_decision(r) for r in rows[:limit]],
            cursor=encode_cursor(DecisionCursor(offset=offset + limit)) if more else None,
            has_more=more,
        )

    async def evaluate(self, *, now: datetime | None = None) -> list[Decision]:
        """One evaluation of every rule (see the module's docstring); returns the decisions made."""
        now = now or datetime.now(UTC)
        await self._settle_open(now)
        async with self._sessions() as session:
            rules = (await session.scalars(select(PolicyRow).order_by(PolicyRow.name))).all()
        made: list[Decision] = []
        for rule in rules:
            try:
                made += await self._evaluate_rule(rule, now)
            except Exception:  # one rule failing must not keep the others from running
                log.exception("policy %s could not be evaluated", rule.name)
        return made

    async def _settle_open(self, now: datetime) -> None:
        async with self._sessions() as session:
            open_rows = (
                await session.scalars(select(PolicyDecisionRow).where(PolicyDecisionRow.lifted_at.is_(None)))
            ).all()
            held = await self._still_held(session, [h for r in open_rows for h in (r.holds or [])])
        for row in open_rows:
            holds = [tuple(h) for h in row.holds or []]
            remaining = [h for h in holds if h in held]
            if holds and not remaining:
                # Gone before its end: someone else lifted it (or the MTA let it run out at its end).
                await self._close(row, now, LiftedBy.operator if now < row.until else LiftedBy.expired, [])
            elif now >= row.until:
                lifted = [await self._resume(row, node_id, hold_id) for node_id, hold_id in remaining]
                await self._close(row, now, LiftedBy.policy, [str(r.id) for r in lifted if r is not None])

    async def _still_held(self, session: AsyncSession, holds: list[Any]) -> set[tuple[str, str]]:
        if not holds:
            return set()
        pairs = [(uuid.UUID(node), hold) for node, hold in holds]
        found = (
            await session.execute(
                select(NodeHoldRow.node_id, NodeHoldRow.hold_id).where(
                    NodeHoldRow.kind == HoldKind.suspension.value,
                    tuple_(NodeHoldRow.node_id, NodeHoldRow.hold_id).in_(pairs),
                )
            )
        ).all()
        return {(str(node), hold) for node, hold in found}

    async def _resume(self, row: PolicyDecisionRow, node_id: str, hold_id: str) -> OperationRecord | None:
        request = OperationRequest(
            operation=QueueOperationType.resume,
            reason=f"policy {row.policy_name}: {row.scope} {row.scope_value} held until {row.until:%Y-%m-%d %H:%M} UTC",
            metadata={"suspension_id": hold_id},
            nodes=[node_id],
        )
        try:
            return await self._operations.submit(request, actor=f"policy:{row.policy_name}", wait=None, run_here=True)
        except (MtactlError, MtaError) as exc:
            log.warning("policy %s could not lift %s on %s: %s", row.policy_name, hold_id, node_id, exc)
            return None

    async def _close(self, row: PolicyDecisionRow, now: datetime, by: LiftedBy, operations: list[str]) -> None:
        async with self._sessions.begin() as session:
            stored = await session.get(PolicyDecisionRow, row.id)
            if stored is None or stored.lifted_at is not None:
                return
            stored.lifted_at = now
            stored.lifted_by = by.value
            stored.lift_operation_ids = operations or None
            await self._audit.record(
                actor=f"policy:{row.policy_name}",
                action="policy.lift",
                target=f"{row.scope}:{row.scope_value}",
                reason=f"lifted by {by.value}",
                success=True,
                session=session,
                detail={"decision_id": str(row.id), "operations": operations, "mode": row.mode},
            )

    async def _evaluate_rule(self, rule: PolicyRow, now: datetime) -> list[Decision]:
        current = minute_of(now)
        length = hold_length(rule.duration)
        start = current - timedelta(minutes=window_minutes(rule.window))
        async with self._sessions() as session:
            last = (
                await session.execute(
                    select(
                        PolicyDecisionRow.scope_value,
                        PolicyDecisionRow.lifted_at,
                        PolicyDecisionRow.lifted_by,
                    )
                    .where(PolicyDecisionRow.policy_id == rule.id)
                    .order_by(PolicyDecisionRow.decided_at)
                )
            ).all()
            latest = {value: (lifted_at, lifted_by) for value, lifted_at, lifted_by in last}
            measured = await self._measure(session, rule, start, current)
        made = []
        for value, (metric_value, events) in sorted(measured.items()):
            lifted_at, lifted_by = latest.get(value, (None, None))
            if value in latest and lifted_at is None:
                continue  # still held (or, observing, still recorded as held)
            if lifted_by == LiftedBy.operator.value and lifted_at is not None and now < lifted_at + length:
                continue  # an operator lifted it: never fight that, for the rule's own duration
            if lifted_at is not None and minute_of(lifted_at) >= start:
                # Re-armed: only what happened after the lift counts.
                again = await self._measure_one(rule, value, minute_of(lifted_at), current)
                if again is None:
                    continue
                metric_value, events = again
            made.append(await self._decide(rule, value, metric_value, events, now, length))
        return made

    async def _measure_one(
        self, rule: PolicyRow, value: str, after: datetime, current: datetime
    ) -> tuple[float, int] | None:
        async with self._sessions() as session:
            return (await self._measure(session, rule, after, current, only=value)).get(value)

    async def _measure(
        self, session: AsyncSession, rule: PolicyRow, after: datetime, current: datetime, only: str | None = None
    ) -> dict[str, tuple[float, int]]:
        """Per value of the rule's scope crossing its threshold in minutes (after, current]: (metric, events)."""
        narrowed = only if only is not None else (rule.match or {}).get(rule.scope)
        if rule.metric == Metric.response_match.value:
            m = PolicyMatchRow
            statement = (
                select(m.scope_value, func.sum(m.events))
                .where(m.policy_id == rule.id, m.minute > after, m.minute <= current)
                .group_by(m.scope_value)
            )
            if narrowed is not None:
                statement = statement.where(m.scope_value == narrowed)
            counted = (await session.execute(statement)).all()
            return {v: (float(n), int(n)) for v, n in counted if n >= rule.threshold}
        r = ROLLUPS.c
        failed = FAILED[Metric(rule.metric)]
        rates: Any = (
            select(
                r.value,
                func.sum(r.events),
                func.coalesce(func.sum(r.events).filter(r.metric.in_(failed)), 0),
            )
            .where(r.dimension == rule.scope, r.metric.in_(ATTEMPTS), r.minute > after, r.minute <= current)
            .group_by(r.value)
        )
        if narrowed is not None:
            rates = rates.where(r.value == narrowed)
        crossing: dict[str, tuple[float, int]] = {}
        for value, total, failures in (await session.execute(rates)).all():
            attempts, bad = int(total), int(failures)
            if attempts >= rule.min_events and bad / attempts >= rule.threshold:
                crossing[str(value)] = (round(bad / attempts, 6), attempts)
        return crossing

    async def _decide(
        self, rule: PolicyRow, value: str, metric_value: float, events: int, now: datetime, length: timedelta
    ) -> Decision:
        actor = f"policy:{rule.name}"
        row = PolicyDecisionRow(
            id=uuid.uuid4(),
            policy_id=rule.id,
            policy_name=rule.name,
            scope=rule.scope,
            scope_value=value,
            action=rule.action,
            mode=rule.mode,
            metric_value=metric_value,
            events=events,
            decided_at=now,
            until=now + length,
        )
        if rule.mode == Mode.observe.value:
            row.note = f"observe mode: would {rule.action} {rule.scope} {value} for {rule.duration}"
        async with self._sessions.begin() as session:
            session.add(row)
            await self._audit.record(
                actor=actor,
                action=f"policy.{'decide' if rule.mode == Mode.enforce.value else 'observe'}",
                target=f"{rule.scope}:{value}",
                reason=f"{rule.metric} {metric_value:g} >= {rule.threshold:g} over {rule.window} ({events} events)",
                success=True,
                session=session,
                detail={"decision_id": str(row.id), "policy_id": str(rule.id), "mode": rule.mode},
            )
        if rule.mode == Mode.enforce.value:
            await self._enforce(rule, row, value, metric_value)
        async with self._sessions() as session:
            stored = await session.get(PolicyDecisionRow, row.id)
        return _decision(stored or row)

    async def _target(self, rule: PolicyRow, value: str) -> dict[str, Any]:
        """What a decision suspends: its value's queues on every node, or for a node's rule everything on exactly
        that node. A node is named by its mtactl name or id, never read as a label selector: the value comes from
        what an MTA posted, and must not select other nodes."""
        if rule.scope != PolicyScope.node.value:
            return {rule.scope: value}
        async with self._sessions() as session:
            statement = select(NodeRow.id).where(NodeRow.name == value)
            with contextlib.suppress(ValueError):
                statement = select(NodeRow.id).where(or_(NodeRow.name == value, NodeRow.id == uuid.UUID(value)))
            found = list((await session.scalars(statement)).all())
        if len(found) != 1:
            raise InvalidInput(f"no registered node is named {value[:100]!r} (by mtactl name or id)", field="node")
        return {"everything": True, "nodes": [str(found[0])]}

    async def _enforce(self, rule: PolicyRow, row: PolicyDecisionRow, value: str, metric_value: float) -> None:
        holds: list[list[str]] = []
        note: str | None = None
        operation_id: uuid.UUID | None = None
        try:
            target = await self._target(rule, value)
            request = msgspec.convert(
                {
                    "operation": "suspend",
                    "reason": f"policy {rule.name}: {rule.metric} {metric_value:g} >= {rule.threshold:g} "
                    f"over {rule.window}",
                    "duration": rule.duration,
                    **target,
                },
                OperationRequest,
            )
            record = await self._operations.submit(request, actor=f"policy:{rule.name}", wait=None, run_here=True)
        except (MtactlError, MtaError) as exc:
            note = f"not acted on: {getattr(exc, 'message', str(exc))}"
        except msgspec.ValidationError as exc:  # a value no operation can name (too long for its field)
            note = f"not acted on: {rule.scope} {value[:100]!r} cannot be targeted ({exc})"
        else:
            operation_id = record.id
            holds = [[str(o.node_id), o.reference] for o in record.nodes if o.result.success and o.reference]
            problems = [f"{o.node}: {e}" for o in record.nodes for e in (o.result.errors or [])]
            if problems:
                note = "; ".join(problems)[:2000]
        async with self._sessions.begin() as session:
            stored = await session.get(PolicyDecisionRow, row.id)
            if stored is not None:
                stored.operation_id = operation_id
                stored.holds = holds
                stored.note = note
