"""Running the projections: one batch per transaction, one runner per projection at a time, lag on request.

A pass reads the projection's checkpoint, the events after it (below the log's horizon, ``log.read_after``),
applies them and moves the checkpoint, all in one transaction. Exactly one runner works on a projection at a
time, however many service processes and workers run the loop: on Postgres a pass first takes a transaction-level
advisory lock named after the projection and skips the pass when another holds it; on every backend the
checkpoint is moved only from the position the pass read (compare-and-set), so two runners that both got through
would make the second roll back rather than apply a batch twice.

The loop runs joint passes: one read of the log for every projection, each applying what is past its own
checkpoint (``run_joint_once``). An event a projection cannot apply because the database refuses what it would
write would stop the projection for good; the pass is retried in smaller batches down to that one event, which is
then recorded as a dead letter and stepped over. Any other fault steps over nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controlplane.db.engine import database_reason, database_unavailable
from controlplane.db.events import insert_dead_letters
from controlplane.db.tables import ProjectionCheckpointRow
from controlplane.projections.base import Projection
from controlplane.projections.log import START, LoggedEvent, LogPosition, backlog, log_size, read_after
from controlplane.projections.schema import ProjectionStatus

log = logging.getLogger("mtactl.projections")
CHECKPOINTS: Table = ProjectionCheckpointRow.__table__  # type: ignore[assignment]
# Events per pass, when that many are waiting. Larger passes coalesce more (one write per message per pass: in
# event time order 1.39 writes per message at 5,000, 1.09 at 20,000) and cost fewer commits; bench/projections.py,
# 200,000 events, side by side: 6,931 events/s at 5,000, 8,737 at 20,000. A pass of 20,000 takes 2-3 s here, and
# keeps its events and their decoded facts in memory meanwhile (~60 MB).
BATCH = 20_000
IDLE_SECONDS = 1.0
# After a wake, appends gather this long before a pass: a pass costs a dozen statements whatever its size, and
# run per request (kumod's hook posting one record at a time) it cost more CPU than the records themselves.
GATHER_SECONDS = 0.2
BACKLOG_CAP = 100_000  # a status call counts at most this many index entries per projection
# Projections with a lane of their own in a pass (``ProjectionService.lanes``).
SOLO_LANES = frozenset({"mirror"})


class ProjectionLocked(Exception):
    """Another runner holds the projection."""


class CheckpointMoved(Exception):
    """Another runner moved the checkpoint while this pass ran: this pass is rolled back."""


def refused_for_its_content(exc: BaseException) -> bool:
    """A fault of what a projection would write (the database refusing a value: SQLSTATE classes 22 and 23, or
    the projection's own ValueError), as opposed to a fault of the code or of the database's state (a deadlock, a
    lock timeout, a read-only standby), after which the same events may well apply."""
    seen: set[int] = set()
    layer: BaseException | None = exc
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        sqlstate = getattr(layer, "sqlstate", None) or getattr(layer, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate:
            return sqlstate[:2] in ("22", "23")
        if isinstance(layer, sqlite3.IntegrityError | sqlite3.DataError | ValueError):
            return True
        layer = getattr(layer, "orig", None) or layer.__cause__
    return False


def _lock_key(name: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"mtactl-projection:{name}".encode(), digest_size=8).digest(), "big", signed=True
    )


class ProjectionService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], projections: Sequence[Projection]) -> None:
        self._sessions = sessions
        self.projections = {p.name: p for p in projections}
        self._wake = asyncio.Event()
        self._batch_size = {p.name: BATCH for p in projections}
        # Lanes side by side need a writer each: Postgres has them; SQLite serializes write transactions.
        bind = sessions.kw.get("bind")
        self._concurrent = bind is not None and bind.dialect.name == "postgresql"

    def wake(self) -> None:
        self._wake.set()

    def get(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            raise KeyError(f"no projection {name!r}; there are {', '.join(sorted(self.projections))}") from None

    @staticmethod
    async def _checkpoint_row(session: AsyncSession, name: str) -> Any:
        return (await session.execute(select(CHECKPOINTS).where(CHECKPOINTS.c.name == name))).first()

    async def _checkpoint(self, session: AsyncSession, name: str) -> LogPosition:
        """The projection's checkpoint, created at the start of the log when it has none yet."""
        row = await self._checkpoint_row(session, name)
        if row is not None:
            return LogPosition.of(row)
        postgres = session.get_bind().dialect.name == "postgresql"
        insert = (pg_insert if postgres else sqlite_insert)(CHECKPOINTS).values(
            name=name,
            tx=START.tx,
            event_at=START.event_at,
            dedupe_key=START.dedupe_key,
            applied=0,
            updated_at=datetime.now(UTC),
        )
        await session.execute(insert.on_conflict_do_nothing())
        return await self._checkpoint(session, name)

    async def _read_checkpoint(self, session: AsyncSession, name: str) -> LogPosition:
        row = await self._checkpoint_row(session, name)
        return LogPosition.of(row) if row else START

    async def _lock(self, session: AsyncSession, name: str, *, wait: bool = False) -> None:
        if session.get_bind().dialect.name == "postgresql":
            if wait:
                await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})
                return
            taken = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _lock_key(name)})
            if not taken:
                raise ProjectionLocked(name)

    @staticmethod
    async def _move(session: AsyncSession, name: str, old: LogPosition, new: LogPosition, applied: int) -> None:
        c = CHECKPOINTS.c
        result = await session.execute(
            update(CHECKPOINTS)
            .where(c.name == name, c.tx == old.tx, c.event_at == old.event_at, c.dedupe_key == old.dedupe_key)
            .values(
                tx=new.tx,
                event_at=new.event_at,
                dedupe_key=new.dedupe_key,
                applied=c.applied + applied,
                updated_at=datetime.now(UTC),
            )
        )
        if cast(CursorResult[Any], result).rowcount != 1:
            raise CheckpointMoved(name)

    async def run_once(self, name: str, limit: int | None = None) -> int:
        """One pass of one projection: returns how many events it applied (0: caught up, or another runner holds
        it)."""
        projection = self.get(name)
        limit = limit or self._batch_size[name]
        first: LogPosition | None = None
        try:
            async with self._sessions.begin() as session:
                await self._lock(session, name)
                position = await self._checkpoint(session, name)
                events = await read_after(session, position, limit)
                if not events:
                    return 0
                first = events[0].position
                await projection.apply(session, events)
                await self._move(session, name, position, events[-1].position, len(events))
        except (ProjectionLocked, CheckpointMoved):
            return 0
        except Exception as exc:
            if database_unavailable(exc) or not refused_for_its_content(exc) or first is None:
                raise  # not the events' fault: nothing is stepped over; the loop retries after a pause
            if limit > 1:
                smaller = max(1, limit // 8)
                reason = database_reason(exc)
                log.warning("projection %s: a batch of %d failed (%s); retrying by %d", name, limit, reason, smaller)
                self._batch_size[name] = smaller
                return await self.run_once(name, smaller)
            await self._step_over(name, first, exc)
            return 1
        self._grow(name)
        return len(events)

    def _grow(self, name: str) -> None:
        # Past a fault, back to full batches gradually.
        self._batch_size[name] = min(BATCH, self._batch_size[name] * 8)

    async def _step_over(self, name: str, failed: LogPosition, fault: Exception) -> None:
        """The one event ``name`` cannot apply: kept as a dead letter with the reason, and stepped over, if it is
        still the next one (another runner may have applied it meanwhile, and then nothing is stepped over)."""
        async with self._sessions.begin() as session:
            await self._lock(session, name)
            position = await self._checkpoint(session, name)
            events = await read_after(session, position, 1)
            if not events or events[0].position != failed:
                return
            event = events[0]
            reason = database_reason(fault)
            log.error("projection %s cannot apply event %s: %s; stepped over", name, event.position, reason)
            await insert_dead_letters(
                session,
                [
                    {
                        "received_at": datetime.now(UTC),
                        "source": event.source,
                        "error": f"projection {name} could not apply it: {reason}"[:300],
                        "payload": event.payload,
                        "api_key": None,
                    }
                ],
            )
            await self._move(session, name, position, event.position, 0)

    def lanes(self, names: Sequence[str]) -> list[list[str]]:
        """The named projections split into the lanes a pass applies side by side: each lane in its own
        transaction, so that one lane's Python work runs while the database works on another's. The mirror, the
        costliest (bench/projections.py: ~80 µs of Postgres CPU per event), has a lane of its own; the others
        share one. SQLite has one writer at a time: there every projection shares one lane (one commit a pass)."""
        chosen = sorted(set(names))  # one order for every runner's locks
        if not self._concurrent:
            return [chosen]
        own = [[name] for name in chosen if name in SOLO_LANES]
        rest = [name for name in chosen if name not in SOLO_LANES]
        return own + ([rest] if rest else [])

    async def run_joint_once(self, names: Sequence[str]) -> int:
        """One pass for several projections over one read of the log: the events after the earliest of their
        checkpoints are read once, then each lane (``lanes``) applies, in its own transaction, what is past each
        of its projections' own checkpoint and moves those checkpoints (the decoded facts are shared,
        ``facts.py``). On Postgres the lanes run concurrently.
        Projections another runner holds are left out of the pass. A lane's fault falls back to one pass per
        projection of that lane, which finds the event at fault and steps over it. Returns how many events the
        pass read (0: caught up, or all held elsewhere)."""
        async with self._sessions() as session:
            positions = [await self._read_checkpoint(session, name) for name in names]
            start = min(positions, key=LogPosition.key)
            events = await read_after(session, start, min(self._batch_size[name] for name in names))
        if not events:
            return 0
        # Every lane runs to its end (a fault in one does not cut another off mid-pass), then a fault is raised:
        # the database is away, nothing was stepped over, and the loop retries after a pause.
        outcomes = await asyncio.gather(
            *(self._run_lane(lane, events) for lane in self.lanes(names)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(events) if any(outcomes) else 0

    async def _run_lane(self, names: Sequence[str], events: Sequence[LoggedEvent]) -> bool:
        """Apply ``events`` to a lane's projections in one transaction; False when another runner holds them all."""
        try:
            async with self._sessions.begin() as session:
                held = []
                for name in names:
                    with contextlib.suppress(ProjectionLocked):
                        await self._lock(session, name)
                        held.append(name)
                for name in held:
                    position = await self._checkpoint(session, name)
                    after = position.key()
                    # The events read follow the earliest checkpoint: this one may be further on.
                    own = [e for e in events if e.position.key() > after]
                    if own:
                        await self.projections[name].apply(session, own)
                        await self._move(session, name, position, own[-1].position, len(own))
            for name in held:
                self._grow(name)
            return bool(held)
        except CheckpointMoved:
            return False
        except Exception as exc:
            if database_unavailable(exc):
                raise
            log.warning("projections %s: a joint pass failed (%s); one pass each", names, database_reason(exc))
            return any([await self.run_once(name) for name in names])

    async def catch_up(self, names: Sequence[str] | None = None, *, wait_seconds: float = 30.0) -> int:
        """Run passes until every (named) projection has applied the whole log as it stands. An event beyond the
        horizon (its transaction, or an older one anywhere on the server, still open) or a pass skipped because
        another runner holds the projection is waited for, up to ``wait_seconds``; 0 stops at the horizon.
        Returns how many events the passes read."""
        total = 0
        deadline = time.monotonic() + wait_seconds
        chosen = list(names or self.projections)
        while True:
            read = await self.run_joint_once(chosen)
            total += read
            if read:
                continue
            if time.monotonic() >= deadline or not any([await self._behind(name) for name in chosen]):
                break
            await asyncio.sleep(0.02)
        return total

    async def _behind(self, name: str) -> bool:
        async with self._sessions() as session:
            position = await self._read_checkpoint(session, name)
            behind, _ = await backlog(session, position, 1)
        return behind > 0

    async def run_forever(self) -> None:
        """The background loop: catch up shortly after events are appended (``wake``), or every second."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
                await asyncio.sleep(GATHER_SECONDS)
            self._wake.clear()
            try:
                await self.catch_up(wait_seconds=0)  # what is beyond the horizon now waits for the next wake
            except Exception as exc:
                if not database_unavailable(exc):
                    log.exception("projections failed; retrying")
                await asyncio.sleep(IDLE_SECONDS)

    async def status(self) -> list[ProjectionStatus]:
        statuses = []
        now = datetime.now(UTC)
        async with self._sessions() as session:
            for name in self.projections:
                row = await self._checkpoint_row(session, name)
                position = LogPosition.of(row) if row else START
                behind, first = await backlog(session, position, BACKLOG_CAP)
                statuses.append(
                    ProjectionStatus(
                        name=name,
                        applied=int(row.applied) if row else 0,
                        events_behind=behind,
                        lag_seconds=max(0.0, (now - first).total_seconds()) if first else 0.0,
                        checkpoint_at=row.updated_at if row else None,
                        position=f"{position.tx}/{position.event_at.isoformat()}/{position.dedupe_key.hex()}",
                    )
                )
        return statuses

    async def log_events(self) -> int:
        """Events in the log (what a rebuild replays)."""
        async with self._sessions() as session:
            return await log_size(session)

    async def rebuild(self, name: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Replay the whole log into a fresh copy of the projection and swap it in: all in one transaction, so
        readers see the old projection until the new one is complete, and a rebuild cut off leaves the old one.
        The live runner is held off meanwhile (the advisory lock on Postgres; SQLite has one writer anyway).
        Returns the number of events replayed."""
        projection = self.get(name)
        started = time.monotonic()
        async with self._sessions.begin() as session:
            # Waits for the pass under way, if any, then holds the live runners off until the commit.
            await self._lock(session, name, wait=True)
            await projection.reset(session)  # on SQLite this write takes the one write lock first
            await self._checkpoint(session, name)
            total = await log_size(session)
            position, replayed = START, 0
            while events := await read_after(session, position, BATCH):
                await projection.apply(session, events)
                position = events[-1].position
                replayed += len(events)
                if progress is not None:
                    progress(replayed, max(total, replayed))
            c = CHECKPOINTS.c
            await session.execute(
                update(CHECKPOINTS)
                .where(c.name == name)
                .values(
                    tx=position.tx,
                    event_at=position.event_at,
                    dedupe_key=position.dedupe_key,
                    applied=replayed,
                    updated_at=datetime.now(UTC),
                )
            )
        log.info("projection %s rebuilt from %d events in %.1f s", name, replayed, time.monotonic() - started)
        return replayed
