"""Ingestion: decode, group-commit, spool when the database is away, replay; and the event/dead-letter queries.

Every POST hands its decoded records to one writer task. The writer takes everything queued at that moment (up to
``ingest_max_batch`` records), writes it in one transaction (events, mirror, dead letters) and only then releases
the waiting requests: concurrent requests share one commit, and a 202 always means "durable".

When the database cannot be reached the group is written to the local spool instead (fsynced) and acknowledged;
a replay task feeds the spool back once the database answers. KumoMTA treats any non-2xx reply as final and drops
the records, so the endpoint never answers 5xx for a database fault: if even the spool cannot be written, the
request is held (no reply) while the writer keeps retrying, and KumoMTA's client eventually times out and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgspec
from sqlalchemy import ColumnElement, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.kumomta.events import KumoLogRecord, record_decoder, split_body
from adapters.kumomta.mapping import dedupe_key, observe
from adapters.model import assume_utc, recipient_domain
from adapters.model.observation import MessageObservation
from controlplane.db.engine import database_unavailable
from controlplane.db.events import (
    EVENTS,
    insert_dead_letters,
    insert_events,
    select_dead_letters,
    select_events,
    select_message_events,
)
from controlplane.db.mirror import apply_observations
from controlplane.db.tables import MessageRow
from controlplane.errors import InvalidInput
from controlplane.events.schema import (
    DeadLetter,
    DeadLetterPage,
    EventPage,
    RejectedRecord,
    StoredEvent,
)
from controlplane.events.spool import Spool, SpooledDeadLetter, SpooledRecord, SpoolFile
from controlplane.pagination import decode_cursor, encode_cursor

log = logging.getLogger("mtactl.ingest")
SOURCE = "kumomta"
RETRY_SECONDS = (0.2, 0.5, 1, 2, 5)
REPLAY_INTERVAL_SECONDS = 5.0


@dataclass
class DecodedRecord:
    payload: str
    record: KumoLogRecord
    key: bytes
    observation: MessageObservation | None
    api_key: str | None


@dataclass
class DeadLetterEntry:
    error: str
    payload: str
    api_key: str | None


@dataclass
class Submission:
    records: list[DecodedRecord]
    dead_letters: list[DeadLetterEntry]
    done: asyncio.Future[tuple[int, int, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def decode_body(
    body: bytes, *, api_key: str | None, tenant: str | None
) -> tuple[list[DecodedRecord], list[DeadLetterEntry], list[RejectedRecord]]:
    """Split a POST body into decodable records and dead letters (with the index and reason of each reject)."""
    records: list[DecodedRecord] = []
    dead: list[DeadLetterEntry] = []
    rejected: list[RejectedRecord] = []
    try:
        raws = split_body(body)
    except msgspec.DecodeError as exc:
        text = storable_text(body.decode("utf-8", errors="replace"))
        dead.append(DeadLetterEntry(error=f"body is not JSON: {exc}", payload=text, api_key=api_key))
        return records, dead, [RejectedRecord(index=0, error=f"body is not JSON: {exc}")]
    for index, raw in enumerate(raws):
        payload = storable_text(bytes(raw).decode("utf-8", errors="replace"))
        try:
            record = record_decoder.decode(raw)
            if "\\u0000" in payload:  # JSON text carries a NUL only escaped; most records need no field check
                _check_text(record)
            observation = observe(record)
            if tenant is not None and (observation.tenant_id if observation else None) != tenant:
                raise ValueError(f"this API key may only ingest records of tenant {tenant!r}")
            if observation is not None:
                _check_lengths(observation)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            dead.append(DeadLetterEntry(error=str(exc), payload=payload, api_key=api_key))
            rejected.append(RejectedRecord(index=index, error=str(exc)))
            continue
        records.append(DecodedRecord(payload, record, dedupe_key(record), observation, api_key))
    return records, dead, rejected


def storable_text(text: str) -> str:
    """Postgres text cannot hold NUL; the one change made to a kept payload is writing it as the escape \\u0000."""
    return text.replace("\x00", "\\u0000")


def _check_text(record: KumoLogRecord) -> None:
    for name in ("type", "id", "sender", "recipient", "queue", "site", "egress_pool"):
        value = getattr(record, name)
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{name} contains a NUL character")


# Parts of the queue name land in these message_queue columns; their widths are the limits.
DERIVED_COLUMN_WIDTHS: dict[str, int] = {
    name: cast(String, MessageRow.__table__.c[name].type).length or 0
    for name in ("tenant_id", "campaign_id", "routing_domain", "domain")
}


def _check_lengths(observation: MessageObservation) -> None:
    for name, limit in DERIVED_COLUMN_WIDTHS.items():
        value = getattr(observation, name)
        if value is not None and len(value) > limit:
            raise ValueError(f"{name} from the queue name is longer than {limit} characters")


def event_row(item: DecodedRecord, received_at: datetime) -> tuple[Any, ...]:
    """The ``events`` row of a record, as a tuple in ``EVENT_COLUMNS`` (table) order, ready for COPY."""
    record, observation = item.record, item.observation
    return (
        record.occurred_at(),  # event_at
        item.key,  # dedupe_key
        received_at,
        SOURCE,
        record.type,
        observation.id if observation else None,  # message_uuid
        record.id,  # mta_message_id
        record.recipient,
        record.sender,
        record.queue,  # queue_name
        observation.domain if observation else recipient_domain(record.recipient),
        observation.tenant_id if observation else None,
        observation.campaign_id if observation else None,
        record.response.code if record.response else None,  # response_code
        item.payload,
    )


async def write_group(
    session: AsyncSession, records: Sequence[DecodedRecord], dead_letters: Sequence[DeadLetterEntry]
) -> set[bytes]:
    """Write one group in the caller's transaction; returns the keys of events that were new."""
    received_at = datetime.now(UTC)
    unique = list({r.key: r for r in records}.values())
    inserted = await insert_events(session, [event_row(r, received_at) for r in unique])
    # Only new events move the mirror: a replayed duplicate has been applied already.
    await apply_observations(session, [r.observation for r in unique if r.key in inserted and r.observation])
    await insert_dead_letters(
        session,
        [
            {"received_at": received_at, "source": SOURCE, "error": d.error, "payload": d.payload, "api_key": d.api_key}
            for d in dead_letters
        ],
    )
    return inserted


class IngestPipeline:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], spool_dir: Path, max_batch: int, writers: int = 1
    ) -> None:
        self._sessions = sessions
        self._writers = writers
        self._spool = Spool(spool_dir)
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Submission] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._replay_now = asyncio.Event()
        self._spool_dirty = False  # something was spooled since the spool was last found empty

    async def start(self) -> None:
        # Several writers keep the database busy while another group is being decoded or answered. They may run
        # concurrently because every write is idempotent and the mirror merge does not depend on order.
        self._tasks = [asyncio.create_task(self._write_loop()) for _ in range(self._writers)]
        self._tasks.append(asyncio.create_task(self._replay_loop()))
        if self._spool.pending():
            self._spool_dirty = True
            self._replay_now.set()

    async def stop(self) -> None:
        # Let queued submissions finish before stopping: their senders are waiting for a durable answer.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 30)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, records: list[DecodedRecord], dead_letters: list[DeadLetterEntry]) -> tuple[int, int, int]:
        """Returns (accepted, duplicates, spooled) once the records are durable."""
        submission = Submission(records, dead_letters)
        await self._queue.put(submission)
        return await submission.done

    def spooled_files(self) -> int:
        return len(self._spool.pending())

    async def _write_loop(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = len(group[0].records)
            while size < self._max_batch and not self._queue.empty():
                group.append(self._queue.get_nowait())
                size += len(group[-1].records)
            try:
                await self._write_durably(group)
            except Exception as exc:  # a bug, not a fault of the database: fail these requests, keep serving
                log.exception("ingest writer failed")
                for submission in group:
                    if not submission.done.done():
                        submission.done.set_exception(exc)
            finally:
                for _ in group:
                    self._queue.task_done()

    async def _write_durably(self, group: list[Submission]) -> None:
        records = [r for s in group for r in s.records]
        dead = [d for s in group for d in s.dead_letters]
        for attempt in range(1_000_000):
            try:
                async with self._sessions.begin() as session:
                    inserted = await write_group(session, records, dead)
            except Exception as exc:
                if not database_unavailable(exc):
                    try:
                        await self._write_isolated(group, exc)
                        return
                    except Exception as again:  # the database went away while isolating: spool what is left
                        if not database_unavailable(again):
                            raise
                        group = [s for s in group if not s.done.done()]
                        records = [r for s in group for r in s.records]
                        dead = [d for s in group for d in s.dead_letters]
                log.warning("database unavailable (%s); spooling %d records", type(exc).__name__, len(records))
                try:
                    await asyncio.to_thread(self._spool.write, _to_spool(records, dead))
                    self._spool_dirty = True
                except OSError:
                    log.exception("spool write failed too; holding %d requests and retrying", len(group))
                    await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                    continue
                for submission in group:
                    count = len({r.key for r in submission.records})
                    _resolve(submission, (count, 0, count))
                return
            _settle(group, inserted)
            if self._spool_dirty:
                self._replay_now.set()
            return

    async def _write_isolated(self, group: list[Submission], error: Exception) -> None:
        """A group the database refused for its content: write request by request, and a refused record goes to
        the dead letters with the database's reason rather than failing its neighbours."""
        log.warning("group refused (%s); retrying record by record", error)
        for submission in group:
            accepted = duplicates = 0
            for record in submission.records:
                try:
                    async with self._sessions.begin() as session:
                        inserted = await write_group(session, [record], [])
                    accepted += len(inserted)
                    duplicates += 1 - len(inserted)
                except Exception as exc:
                    async with self._sessions.begin() as session:
                        await write_group(
                            session, [], [DeadLetterEntry(f"database refused: {exc}", record.payload, record.api_key)]
                        )
            if submission.dead_letters:
                async with self._sessions.begin() as session:
                    await write_group(session, [], submission.dead_letters)
            _resolve(submission, (accepted, duplicates, 0))

    async def _replay_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replay_now.wait(), REPLAY_INTERVAL_SECONDS)
            self._replay_now.clear()
            pending = self._spool.pending()
            if not pending:
                self._spool_dirty = False
            for path in pending:
                try:
                    await self.replay_file(path)
                except Exception as exc:
                    if not database_unavailable(exc):
                        log.exception("could not replay %s; it stays in the spool", path)
                    break

    async def replay_file(self, path: Path) -> int:
        content = await asyncio.to_thread(self._spool.read, path)
        records, dead = [], [DeadLetterEntry(d.error, d.payload, d.api_key) for d in content.dead_letters]
        for item in content.records:
            decoded, more_dead, _ = decode_body(item.payload.encode(), api_key=item.api_key, tenant=None)
            records.extend(decoded)
            dead.extend(more_dead)
        async with self._sessions.begin() as session:
            inserted = await write_group(session, records, dead)
        await asyncio.to_thread(path.unlink)
        log.info("replayed %s: %d records, %d new", path.name, len(records), len(inserted))
        return len(inserted)


def _to_spool(records: Sequence[DecodedRecord], dead: Sequence[DeadLetterEntry]) -> SpoolFile:
    return SpoolFile(
        source=SOURCE,
        records=[SpooledRecord(r.payload, r.api_key) for r in records],
        dead_letters=[SpooledDeadLetter(d.error, d.payload, d.api_key) for d in dead],
    )


def _settle(group: list[Submission], inserted: set[bytes]) -> None:
    claimed: set[bytes] = set()
    for submission in group:
        accepted = duplicates = 0
        for key in dict.fromkeys(r.key for r in submission.records):
            if key in inserted and key not in claimed:
                claimed.add(key)
                accepted += 1
            else:
                duplicates += 1
        duplicates += len(submission.records) - len({r.key for r in submission.records})
        _resolve(submission, (accepted, duplicates, 0))


def _resolve(submission: Submission, outcome: tuple[int, int, int]) -> None:
    if not submission.done.done():
        submission.done.set_result(outcome)


class EventCursor(msgspec.Struct, array_like=True):
    event_at: datetime
    key: str
    order: str

    def encode(self) -> str:
        return encode_cursor(self)

    @classmethod
    def decode(cls, text: str, order: str) -> tuple[datetime, bytes]:
        cursor = decode_cursor(text, cls)
        try:
            key = bytes.fromhex(cursor.key)
        except ValueError:
            raise InvalidInput("cursor is not one this API issued", field="cursor") from None
        if cursor.order != order:
            raise InvalidInput("cursor was issued for another order", field="cursor")
        return cursor.event_at, key


def stored_event(row: Any) -> StoredEvent:
    return StoredEvent(
        event_at=row.event_at,
        received_at=row.received_at,
        source=row.source,
        type=row.type,
        message=row.message_uuid,
        mta_message_id=row.mta_message_id,
        recipient=row.recipient,
        sender=row.sender,
        queue_name=row.queue_name,
        domain=row.domain,
        tenant_id=row.tenant_id,
        campaign_id=row.campaign_id,
        response_code=row.response_code,
        record=msgspec.Raw(row.payload.encode()),
    )


class EventQueryService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        types: list[str] | None = None,
        domain: str | None = None,
        tenant_id: str | None = None,
        order: str = "desc",
        limit: int = 100,
        cursor: str | None = None,
    ) -> EventPage:
        c = EVENTS.c
        where: list[ColumnElement[bool]] = []
        if since is not None:
            where.append(c.event_at >= assume_utc(since))
        if until is not None:
            where.append(c.event_at < assume_utc(until))
        if types:
            where.append(c.type.in_(types))
        if domain is not None:
            where.append(c.domain == domain.lower())
        if tenant_id is not None:
            where.append(c.tenant_id == tenant_id)
        after = EventCursor.decode(cursor, order) if cursor else None
        async with self._sessions() as session:
            rows = await select_events(session, where=where, after=after, descending=order == "desc", limit=limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            EventCursor(event_at=rows[-1].event_at, key=bytes(rows[-1].dedupe_key).hex(), order=order).encode()
            if has_more
            else None
        )
        return EventPage(data=[stored_event(r) for r in rows], cursor=next_cursor, has_more=has_more)

    async def message_events(self, message: Any, *, limit: int = 1000) -> list[StoredEvent]:
        async with self._sessions() as session:
            rows = await select_message_events(session, message, limit)
        return [stored_event(r) for r in rows]

    async def dead_letters(self, *, limit: int = 100, cursor: str | None = None) -> DeadLetterPage:
        before = None
        if cursor:
            try:
                before = int(cursor)
            except ValueError:
                raise InvalidInput("cursor is not one this API issued", field="cursor") from None
        async with self._sessions() as session:
            rows = await select_dead_letters(session, before_id=before, limit=limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        return DeadLetterPage(
            data=[
                DeadLetter(
                    id=r.id,
                    received_at=r.received_at,
                    source=r.source,
                    error=r.error,
                    payload=r.payload,
                    api_key=r.api_key,
                )
                for r in rows
            ],
            cursor=str(rows[-1].id) if has_more else None,
            has_more=has_more,
        )
