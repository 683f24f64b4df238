"""Egress sources' daily limits and sending windows: usage from the rollups, the capacity listing, seed 002's
estimate, and the enforcement pass that holds a source's traffic at the MTAs while it must not send.

Usage is read from ``event_rollups`` (deliveries per minute by ``egress_source``), never from the events: a day's
usage is one grouped read of at most 1,440 rows per source. Holding goes through the drivers' neutral egress
hold (``MtaAdapter.egress_paths`` / ``hold_egress_path`` / ``resume``): on KumoMTA a ready-queue suspension per
egress path of the source, made for exactly as long as the hold should last, so kumod ends it by itself even if
mtactl is down when the window opens; ZoneMTA cannot hold a zone and is reported so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

import msgspec
from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import MtaAdapter, Suspension
from adapters.registry import driver_for
from adapters.sources import DELIVERED_TYPES
from controlplane.audit.service import AuditLog
from controlplane.capacity.schema import (
    CapacityEstimate,
    CapacityReport,
    DayPlan,
    EnforcementStep,
    HeldPath,
    SendingWindow,
    Source,
    SourceCapacity,
    SourceList,
    SourceSpec,
)
from controlplane.capacity.windows import (
    PlannedSource,
    SourceState,
    Window,
    ceil_seconds,
    estimate,
    parse_clock,
    state_of,
)
from controlplane.db.messages import IN_QUEUE
from controlplane.db.tables import EventRollupRow, MessageRow, NodeQueuesRow, NodeRow, SourceHoldRow, SourceRow
from controlplane.errors import InvalidInput, NotFound
from controlplane.fleet.service import FleetService, NodeFault

log = logging.getLogger("mtactl.capacity")
ACTOR = "mtactl:capacity"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def window_of(window: SendingWindow) -> Window:
    """The window, checked: ``InvalidInput`` naming the field at fault."""
    try:
        start = parse_clock(window.start)
    except ValueError as exc:
        raise InvalidInput(f"window.start: {exc}", field="window.start") from None
    try:
        end = parse_clock(window.end, allow_midnight_end=True)
    except ValueError as exc:
        raise InvalidInput(f"window.end: {exc}", field="window.end") from None
    if end <= start:
        raise InvalidInput(
            "window.end must be after window.start on the same day (the daily limit resets at local midnight; "
            "24:00 ends the day)",
            field="window.end",
        )
    if window.timezone not in _zones():
        raise InvalidInput(f"window.timezone: {window.timezone!r} is not an IANA time zone", field="window.timezone")
    return Window(start=start, end=end, zone=ZoneInfo(window.timezone))


def _source(row: SourceRow) -> Source:
    return Source(
        name=row.name,
        daily_limit=row.daily_limit,
        window=SendingWindow(start=row.window_start, end=row.window_end, timezone=row.timezone),
        nodes=list(row.nodes),
        tenants=list(row.tenants),
        pools=list(row.pools),
        updated_at=row.updated_at,
    )


def _window(row: SourceRow) -> Window:
    return window_of(SendingWindow(start=row.window_start, end=row.window_end, timezone=row.timezone))


@dataclass
class _Planned:
    row: SourceRow
    window: Window
    state: SourceState


class CapacityService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        fleet: FleetService,
        *,
        max_message_age: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._fleet = fleet
        self.max_message_age = max_message_age
        self.clock = clock  # tests set it; everything here reads the time through it

    # --- sources --------------------------------------------------------------------------------------------

    async def put(self, name: str, spec: SourceSpec, *, actor: str) -> Source:
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise InvalidInput("name: letters, digits and . _ : @ - (up to 200), starting alnum", field="name")
        window_of(spec.window)
        if spec.nodes:
            await self._fleet.select(list(spec.nodes))  # 400 naming `nodes` for one that matches no node
        async with self._sessions.begin() as session:
            row = await session.get(SourceRow, name)
            if row is None:
                row = SourceRow(name=name)
                session.add(row)
            row.daily_limit = spec.daily_limit
            row.window_start, row.window_end, row.timezone = spec.window.start, spec.window.end, spec.window.timezone
            row.nodes = list(spec.nodes or [])
            row.tenants = list(spec.tenants or [])
            row.pools = list(spec.pools or [])
            row.updated_at = self.clock()
            await self._audit.record(
                actor=actor,
                action="source.set",
                target=name,
                success=True,
                session=session,
                detail=msgspec.to_builtins(spec),
            )
            return _source(row)

    async def get(self, name: str) -> Source:
        async with self._sessions() as session:
            row = await session.get(SourceRow, name)
        if row is None:
            raise NotFound(f"no source {name!r}", field="name")
        return _source(row)

    async def all(self) -> SourceList:
        async with self._sessions() as session:
            rows = (await session.scalars(select(SourceRow).order_by(SourceRow.name))).all()
        return SourceList(data=[_source(r) for r in rows])

    async def delete(self, name: str, *, actor: str) -> Source:
        """Forget a source; what mtactl holds for it is released by the next enforcement pass."""
        async with self._sessions.begin() as session:
            row = await session.get(SourceRow, name)
            if row is None:
                raise NotFound(f"no source {name!r}", field="name")
            source = _source(row)
            await session.delete(row)
            await self._audit.record(actor=actor, action="source.delete", target=name, success=True, session=session)
        return source

    # --- usage and capacity -----------------------------------------------------------------------------------

    async def _planned(self, session: AsyncSession, now: datetime) -> list[_Planned]:
        rows = (await session.scalars(select(SourceRow).order_by(SourceRow.name))).all()
        if not rows:
            return []
        windows = {r.name: _window(r) for r in rows}
        since = {name: w.midnight(w.local_day(now)) for name, w in windows.items()}
        # One grouped read of today's delivery rollups for every source (from the earliest local midnight).
        counted = await session.execute(
            select(EventRollupRow.value, EventRollupRow.minute, func.sum(EventRollupRow.events))
            .where(
                EventRollupRow.dimension == "egress_source",
                EventRollupRow.value.in_(list(windows)),
                EventRollupRow.metric.in_(DELIVERED_TYPES),
                EventRollupRow.minute >= min(since.values()),
                EventRollupRow.minute <= now,
            )
            .group_by(EventRollupRow.value, EventRollupRow.minute)
        )
        used = dict.fromkeys(windows, 0)
        for value, minute, events in counted.all():
            if minute >= since[value]:
                used[value] += int(events)
        return [_Planned(r, windows[r.name], state_of(windows[r.name], r.daily_limit, used[r.name], now)) for r in rows]

    async def _at_risk(self, session: AsyncSession, row: SourceRow, until: datetime) -> int:
        """Queued mirrored messages of the source's pools that expire before ``until`` (their ``expires_at``, or
        ``created_at`` + the MTA's default maximum age when the mirror has none)."""
        pools = list(row.pools) or [row.name]
        limit = until - self.max_message_age
        count = await session.scalar(
            select(func.count())
            .select_from(MessageRow)
            .where(
                MessageRow.pool_name.in_(pools),
                MessageRow.status.in_(IN_QUEUE),
                or_(
                    MessageRow.expires_at < until,
                    (MessageRow.expires_at.is_(None)) & (MessageRow.created_at < limit),
                ),
            )
        )
        return int(count or 0)

    async def capacity(self) -> CapacityReport:
        now = self.clock()
        async with self._sessions() as session:
            planned = await self._planned(session, now)
            holds = (await session.scalars(select(SourceHoldRow))).all()
            names = {r.id: r.name for r in (await session.scalars(select(NodeRow))).all()}
            listed: list[SourceCapacity] = []
            for p in planned:
                risk = 0
                warnings: list[str] = []
                if p.state.holding and p.state.sends_again_at is not None:
                    risk = await self._at_risk(session, p.row, p.state.sends_again_at)
                    if risk:
                        warnings.append(
                            f"{risk} queued message(s) of {p.row.name} would expire before it sends again at "
                            f"{p.state.sends_again_at:%Y-%m-%d %H:%M} UTC"
                        )
                held = [
                    HeldPath(
                        node=names.get(h.node_id, str(h.node_id)),
                        path=h.path,
                        hold_id=h.hold_id,
                        held_until=h.held_until,
                        lifted_at=h.lifted_at,
                    )
                    for h in holds
                    if h.source == p.row.name
                ]
                listed.append(
                    SourceCapacity(
                        name=p.row.name,
                        daily_limit=p.row.daily_limit,
                        used_today=p.state.used_today,
                        remaining_today=p.state.remaining_today,
                        window_open=p.state.window_open,
                        next_window_opens_at=p.state.next_window_opens_at,
                        holding=p.state.holding,
                        sends_again_at=p.state.sends_again_at,
                        held=held,
                        messages_at_risk=risk,
                        warnings=warnings,
                    )
                )
        return CapacityReport(data=listed, as_of=now, warnings=[w for s in listed for w in s.warnings])

    async def estimate(self, messages: int, *, tenant: str | None = None) -> CapacityEstimate:
        now = self.clock()
        async with self._sessions() as session:
            planned = await self._planned(session, now)
        chosen = [p for p in planned if tenant is None or not p.row.tenants or tenant in p.row.tenants]
        try:
            result = estimate(
                [PlannedSource(p.row.name, p.window, p.row.daily_limit, p.state.remaining_today) for p in chosen],
                messages,
                now,
            )
        except ValueError as exc:
            raise InvalidInput(f"messages: {exc}", field="messages") from None
        return CapacityEstimate(
            messages=messages,
            sending_days=result.sending_days,
            finishes_at=result.finishes_at,
            per_day=[DayPlan(date=d, messages=n) for d, n in result.per_day],
            sources=len(chosen),
            tenant=tenant,
        )

    # --- enforcement ------------------------------------------------------------------------------------------

    async def enforce(self) -> list[EnforcementStep]:
        """One pass: release what no longer needs holding, hold what must not send. Idempotent: a path already
        held (by mtactl or anyone) is not held again; a hold mtactl made that is gone before its end was lifted by
        someone else (an operator's resume), and that path is left alone until the hold would have ended."""
        now = self.clock()
        async with self._sessions() as session:
            planned = {p.row.name: p for p in await self._planned(session, now)}
            holds = list((await session.scalars(select(SourceHoldRow))).all())
            nodes = {r.id: r for r in (await session.scalars(select(NodeRow))).all()}
            ready = {
                node_id: dict(paths)
                for node_id, paths in (await session.execute(select(NodeQueuesRow.node_id, NodeQueuesRow.ready))).all()
            }
        steps: list[EnforcementStep] = []
        steps += await self._release(holds, planned, nodes, now)
        kept = {(h.source, h.node_id, h.path): h for h in holds if _still_held(h, planned, now)}
        for p in planned.values():
            if not p.state.holding or p.state.sends_again_at is None:
                continue
            try:
                targets = await self._fleet.select(list(p.row.nodes)) if p.row.nodes else list(nodes.values())
            except InvalidInput as exc:  # a node named at PUT was removed since
                steps.append(EnforcementStep(source=p.row.name, node="", action="failed", detail=exc.message))
                continue
            results = await asyncio.gather(
                *(self._hold_on(p, node, ready.get(node.id, {}), kept, now) for node in targets)
            )
            for found in results:
                steps += found
            risk = 0
            async with self._sessions() as session:
                risk = await self._at_risk(session, p.row, p.state.sends_again_at)
            if risk:
                log.warning(
                    "source %s is held until %s: %d queued message(s) would expire before then",
                    p.row.name,
                    p.state.sends_again_at.isoformat(),
                    risk,
                )
        return steps

    async def _release(
        self, holds: list[SourceHoldRow], planned: dict[str, _Planned], nodes: dict[uuid.UUID, NodeRow], now: datetime
    ) -> list[EnforcementStep]:
        steps: list[EnforcementStep] = []
        for h in holds:
            if _still_held(h, planned, now):
                continue
            node = nodes.get(h.node_id)
            detail = "ended by the MTA at its end" if h.held_until <= now else None
            if h.lifted_at is None and h.held_until > now and node is not None:
                done = await self._fleet.with_adapter(node, functools.partial(_lift, h.hold_id))
                if isinstance(done, NodeFault):
                    # Kept for the next pass; kumod ends it at held_until in any case.
                    steps.append(
                        EnforcementStep(
                            source=h.source, node=node.name, action="failed", path=h.path, detail=done.reason
                        )
                    )
                    continue
            async with self._sessions.begin() as session:
                await session.execute(
                    delete(SourceHoldRow).where(
                        SourceHoldRow.source == h.source,
                        SourceHoldRow.node_id == h.node_id,
                        SourceHoldRow.path == h.path,
                    )
                )
                await self._audit.record(
                    actor=ACTOR,
                    action="capacity.release",
                    target=h.path,
                    success=True,
                    session=session,
                    detail={"source": h.source, "node_id": str(h.node_id), "hold_id": h.hold_id},
                )
            name = node.name if node is not None else str(h.node_id)
            steps.append(EnforcementStep(source=h.source, node=name, action="released", path=h.path, detail=detail))
        return steps

    async def _hold_on(
        self,
        p: _Planned,
        node: NodeRow,
        ready: dict[str, int],
        kept: dict[tuple[str, uuid.UUID, str], SourceHoldRow],
        now: datetime,
    ) -> list[EnforcementStep]:
        source, until = p.row.name, p.state.sends_again_at
        assert until is not None
        capabilities = driver_for(node.kind).capabilities()
        if not capabilities.holds_egress:
            log.warning("source %s cannot be held on %s: %s", source, node.name, capabilities.egress_hold_refusal)
            return [
                EnforcementStep(
                    source=source, node=node.name, action="refused", detail=capabilities.egress_hold_refusal
                )
            ]
        why = "outside its sending window" if not p.state.window_open else f"daily limit {p.row.daily_limit} reached"
        reason = f"mtactl capacity: {source} {why}, until {until:%Y-%m-%d %H:%M} UTC"
        made: list[tuple[str, str]] = []
        lifted: list[SourceHoldRow] = []
        steps: list[EnforcementStep] = []

        async def work(adapter: MtaAdapter) -> None:
            paths = adapter.egress_paths(source, ready)
            if not paths:
                return
            listed: list[Suspension] = await adapter.list_suspensions()
            live = {s.id for s in listed}
            held_paths = {s.ready_queue for s in listed if s.ready_queue}
            for path in paths:
                ours = kept.get((source, node.id, path))
                if ours is not None:
                    if ours.lifted_at is None and ours.hold_id not in live:
                        lifted.append(ours)
                    continue
                if path in held_paths:
                    continue  # held by someone else's suspension: not mtactl's to make or to lift
                try:
                    ident = await adapter.hold_egress_path(
                        path, reason=reason, duration=f"{ceil_seconds(until - now)}s"
                    )
                except Exception as exc:  # one path's failure is that path's; the others are still held
                    steps.append(
                        EnforcementStep(source=source, node=node.name, action="failed", path=path, detail=str(exc))
                    )
                    continue
                made.append((path, ident))

        done = await self._fleet.with_adapter(node, work)
        if isinstance(done, NodeFault):
            steps.append(EnforcementStep(source=source, node=node.name, action="failed", detail=done.reason))
        if not (made or lifted):
            return steps
        async with self._sessions.begin() as session:
            for path, ident in made:
                session.add(
                    SourceHoldRow(
                        source=source,
                        node_id=node.id,
                        path=path,
                        hold_id=ident,
                        reason=reason,
                        held_at=now,
                        held_until=until,
                        lifted_at=None,
                    )
                )
                await self._audit.record(
                    actor=ACTOR,
                    action="capacity.hold",
                    target=path,
                    reason=reason,
                    success=True,
                    session=session,
                    detail={"source": source, "node": node.name, "hold_id": ident, "held_until": until.isoformat()},
                )
                steps.append(EnforcementStep(source=source, node=node.name, action="held", path=path))
            for row in lifted:
                stored = await session.get(SourceHoldRow, (row.source, row.node_id, row.path))
                if stored is not None:
                    stored.lifted_at = now
                await self._audit.record(
                    actor=ACTOR,
                    action="capacity.left_lifted",
                    target=row.path,
                    success=True,
                    session=session,
                    detail={
                        "source": source,
                        "node": node.name,
                        "hold_id": row.hold_id,
                        "note": "lifted by someone else before its end: left alone until then",
                    },
                )
                steps.append(EnforcementStep(source=source, node=node.name, action="left_lifted", path=row.path))
        return steps


async def _lift(hold_id: str, adapter: MtaAdapter) -> None:
    await adapter.resume(hold_id)


def _still_held(hold: SourceHoldRow, planned: dict[str, _Planned], now: datetime) -> bool:
    p = planned.get(hold.source)
    return p is not None and p.state.holding and hold.held_until > now
