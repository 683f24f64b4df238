"""Ingestion: decode, append to the event log, spool when the database is away, replay; and the event and
dead-letter queries.

The acknowledgement waits for one thing: the durable append of the records to ``events`` (and of the rejects to
``dead_letters``). Everything that follows the log (the message mirror, the counters) is a projection
(``controlplane.projections``) that catches up after the answer.

Every POST hands its decoded records to a writer task. A writer takes everything queued at that moment (up to
``ingest_max_batch`` records), appends it in one transaction and only then releases the waiting requests:
concurrent requests share one commit, and a 202 always means "durable".

When the database cannot be reached the group is written to the local spool instead (fsynced) and acknowledged;
a replay task feeds the spool back once the database answers. KumoMTA treats any non-2xx reply as final and drops
the records, so the endpoint never answers 5xx for a database fault: if even the spool cannot be written, the
request is held (no reply) while the writer keeps retrying, and KumoMTA's client eventually times out and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

import msgspec
from sqlalchemy import ColumnElement, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.model import assume_utc
from adapters.model.events import EventSource, LogEvent, storable_text
from adapters.sources import event_source
from controlplane.db.engine import database_reason, database_unavailable, one_line
from controlplane.db.events import (
    EVENTS,
    insert_dead_letters,
    insert_events,
    select_dead_letters,
    select_events,
    select_message_events,
)
from controlplane.db.tables import EventLogClockRow, MessageRow
from controlplane.errors import InvalidInput, MtactlError
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
RETRY_SECONDS = (0.2, 0.5, 1, 2, 5)
REPLAY_INTERVAL_SECONDS = 5.0


@dataclass
class DecodedRecord:
    event: LogEvent
    api_key: str | None
    index: int = 0  # its place in the request's body, for the reply's ``rejected``
    tenant: str | None = None  # the tenant of the key that posted it, if the key is tenant-bound

    @property
    def key(self) -> bytes:
        return self.event.dedupe_key

    @property
    def payload(self) -> str:
        return self.event.payload


@dataclass
class DeadLetterEntry:
    error: str
    payload: str
    api_key: str | None
    source: str = ""


class TooManyRecords(MtactlError):
    status_code = 413
    code = "too_many_records"


DEFAULT_MAX_DEAD_LETTERS = 1000
JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def decode_body(
    body: bytes,
    *,
    source: EventSource,
    api_key: str | None,
    tenant: str | None,
    max_records: int | None = None,
    max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS,
    content_type: str = JSON_MEDIA_TYPE,
) -> tuple[list[DecodedRecord], list[DeadLetterEntry], list[RejectedRecord]]:
    """Split a POST body into decodable records and dead letters (with the index and reason of each reject).

    Every fault of one record is that record's: whatever decoding it raises, it is answered in ``rejected`` and
    the others go on. At most ``max_dead_letters`` rejects are kept as dead letters; beyond that one more dead
    letter says how many were not kept. More than ``max_records`` records raise ``TooManyRecords`` (413).
    ``content_type`` (the request's media type) tells a source that also takes forms which it got.
    """
    records: list[DecodedRecord] = []
    dead: list[DeadLetterEntry] = []
    rejected: list[RejectedRecord] = []
    try:
        raws = source.split(body, content_type)
    except (msgspec.DecodeError, RecursionError) as exc:
        text = storable_text(body.decode("utf-8", errors="replace"))
        taken_as = "a form" if content_type == FORM_MEDIA_TYPE and source.form_schema is not None else "JSON"
        reason = one_line(f"body is not {taken_as}: {exc}")
        dead.append(DeadLetterEntry(reason, text, api_key, source.name))
        return records, dead, [RejectedRecord(index=0, error=reason)]
    if max_records is not None and len(raws) > max_records:
        raise TooManyRecords(
            f"{len(raws)} records in one request; at most {max_records} are taken "
            f"(MTACTL_INGEST_MAX_RECORDS_PER_REQUEST): send smaller batches"
        )
    not_kept = 0
    for index, raw in enumerate(raws):
        try:
            records.extend(decode_record(raw, source=source, index=index, api_key=api_key, tenant=tenant))
        except Exception as exc:
            reason = rejection_reason(exc)
            rejected.append(RejectedRecord(index=index, error=reason))
            if len(dead) < max_dead_letters:
                text = storable_text(raw.decode("utf-8", errors="replace"))
                dead.append(DeadLetterEntry(reason, text, api_key, source.name))
            else:
                not_kept += 1
    if not_kept:
        dead.append(
            DeadLetterEntry(
                f"{not_kept} more records of this request were rejected and not kept "
                f"(MTACTL_INGEST_MAX_DEAD_LETTERS_PER_REQUEST is {max_dead_letters})",
                "",
                api_key,
                source.name,
            )
        )
    return records, dead, rejected


def decode_record(
    raw: bytes, *, source: EventSource, index: int = 0, api_key: str | None, tenant: str | None
) -> list[DecodedRecord]:
    """One raw record -> the events ready to append (one per recipient of a record listing several, all with its
    payload and index), having checked everything the database could refuse in them (so a refused write is truly
    exceptional) and, for records that move the mirror, the model's rules (the source checks those). Raises on
    any fault, for the whole record (``rejection_reason`` words it)."""
    decoded = []
    for event in source.decode(raw):
        if len(event.domain) > DOMAIN_WIDTH:
            raise ValueError(f"recipient domain is longer than {DOMAIN_WIDTH} characters")
        if tenant is not None and event.tenant_id != tenant:
            raise ValueError(f"this API key may only ingest records of tenant {tenant!r}")
        decoded.append(DecodedRecord(event, api_key, index, tenant))
    return decoded


def rejection_reason(exc: BaseException) -> str:
    """A short, human reason for refusing one record."""
    if isinstance(exc, msgspec.ValidationError | ValueError):
        text = str(exc)
    elif isinstance(exc, msgspec.DecodeError):
        text = f"not JSON: {exc}"
    elif isinstance(exc, RecursionError):
        text = "nested too deeply"
    else:  # a fault of this code, not of the record: still this record's alone
        log.exception("unexpected fault decoding a record")
        text = f"could not be decoded ({type(exc).__name__})"
    return one_line(text)


# The recipient domain lands in message_queue.domain; its width is the limit.
DOMAIN_WIDTH = cast(String, MessageRow.__table__.c["domain"].type).length or 0


def event_row(item: DecodedRecord, received_at: datetime) -> tuple[Any, ...]:
    """The ``events`` row of a record, as a tuple in ``EVENT_COLUMNS`` order, ready for COPY (``tx`` is the
    database's or the writer's to give)."""
    event = item.event
    return (
        event.event_at,
        event.dedupe_key,
        received_at,
        event.source,
        event.type,
        event.message_uuid,
        event.mta_message_id,
        event.recipient,
        event.sender,
        event.queue_name,
        event.domain,
        event.tenant_id,
        event.campaign_id,
        event.response_code,
        event.payload,
        item.tenant,  # posted_by_tenant
    )


@dataclass
class WriteResult:
    inserted: set[bytes] = field(default_factory=set)  # keys of the events that were new
    refused: list[tuple[DecodedRecord, str]] = field(default_factory=list)  # records not written, and why


TENANT_REFUSAL = "the message belongs to another tenant (a tenant-bound key may touch only its tenant's messages)"


async def write_group(
    session: AsyncSession, records: Sequence[DecodedRecord], dead_letters: Sequence[DeadLetterEntry]
) -> WriteResult:
    """Append one group to the log in the caller's transaction. Records of tenant-bound keys about another
    tenant's message are refused (kept as dead letters) rather than written."""
    received_at = datetime.now(UTC)
    refused = await _other_tenants_messages(session, records)
    if refused:
        skipped = {id(record) for record, _ in refused}
        records = [r for r in records if id(r) not in skipped]
        dead_letters = [
            *dead_letters,
            *(DeadLetterEntry(why, r.payload, r.api_key, r.event.source) for r, why in refused),
        ]
    unique = list({r.key: r for r in records}.values())
    tx = await _next_tx(session) if unique and session.get_bind().dialect.name != "postgresql" else None
    inserted = await insert_events(session, [event_row(r, received_at) for r in unique], tx=tx)
    await insert_dead_letters(
        session,
        [
            {
                "received_at": received_at,
                "source": d.source,
                "error": d.error,
                "payload": d.payload,
                "api_key": d.api_key,
            }
            for d in dead_letters
        ],
    )
    return WriteResult(inserted, refused)


async def _next_tx(session: AsyncSession) -> int:
    """SQLite: this write transaction's place in the log. The UPDATE takes SQLite's write lock, held to the
    commit, so numbers are handed out in commit order."""
    statement = update(EventLogClockRow).where(EventLogClockRow.id == 1).values(tx=EventLogClockRow.tx + 1)
    return int((await session.execute(statement.returning(EventLogClockRow.tx))).scalar_one())


async def _other_tenants_messages(
    session: AsyncSession, records: Sequence[DecodedRecord]
) -> list[tuple[DecodedRecord, str]]:
    """The records of tenant-bound keys that would touch a message which is not their tenant's: one with a stored
    event of another tenant (or of none), or with an event of another tenant in this same group. (Two writers
    racing on one message can both pass this check; the mirror projection then applies the tenant-bound key's
    event only to its own tenant's message.)"""
    bound_ids = {r.event.message_uuid for r in records if r.tenant is not None and r.event.message_uuid is not None}
    if not bound_ids:
        return []
    c = EVENTS.c
    stored = await session.execute(
        select(c.message_uuid, c.tenant_id).where(c.message_uuid.in_(list(bound_ids))).distinct()
    )
    owners: dict[Any, set[str | None]] = {}
    for message, tenant in stored:
        owners.setdefault(message, set()).add(tenant)
    for record in records:
        if record.tenant is None and record.event.message_uuid is not None:
            owners.setdefault(record.event.message_uuid, set()).add(record.event.tenant_id)
    refused = []
    for record in records:
        message = record.event.message_uuid
        if record.tenant is None or message is None:
            continue
        if owners.setdefault(message, {record.tenant}) != {record.tenant}:
            refused.append((record, TENANT_REFUSAL))
    return refused


class IngestOutcome(NamedTuple):
    accepted: int
    duplicates: int
    spooled: int
    rejected: tuple[RejectedRecord, ...] = ()  # records the writer could not store (decoding rejects aside)


@dataclass
class Submission:
    records: list[DecodedRecord]
    dead_letters: list[DeadLetterEntry]
    done: asyncio.Future[IngestOutcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


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
        # Called after every append that stored new events: the in-process projection runner wakes up on it.
        self.on_append: list[Callable[[], None]] = []
        # Records answered for by this process, by outcome (accepted, duplicate, rejected, spooled): /metrics.
        self.outcomes: Counter[str] = Counter()

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

    async def submit(self, records: list[DecodedRecord], dead_letters: list[DeadLetterEntry]) -> IngestOutcome:
        """Returns once the records are durable: how many were new, already stored, spooled, and refused."""
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
                result = await self._write_isolating(records, dead)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                log.warning("database unavailable (%s); spooling %d records", type(exc).__name__, len(records))
                try:
                    await asyncio.to_thread(self._spool.write, _to_spool(records, dead))
                    self._spool_dirty = True
                except OSError:
                    log.exception("spool write failed too; holding %d requests and retrying", len(group))
                    await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                    continue
                for submission in group:
                    unique = len({r.key for r in submission.records})
                    _resolve(submission, IngestOutcome(unique, len(submission.records) - unique, unique))
                return
            _settle(group, result)
            if result.inserted:
                self._appended()
            if self._spool_dirty:
                self._replay_now.set()
            return

    async def _write_isolating(self, records: list[DecodedRecord], dead: list[DeadLetterEntry]) -> WriteResult:
        """Write the group in one transaction; if the database refuses it for its content, find the records at
        fault by bisection (halves, then their halves: about 2·log2(n) transactions for one bad record, instead
        of one per record) and refuse those alone, into the dead letters with the database's reason. Raises only
        when the database is unavailable (the caller spools)."""
        try:
            async with self._sessions.begin() as session:
                return await write_group(session, records, dead)
        except Exception as exc:
            if database_unavailable(exc):
                raise
            log.warning("group of %d records refused (%s); bisecting", len(records), database_reason(exc))
        result = WriteResult()
        await self._write_dead_letters(dead)
        refused: list[tuple[DecodedRecord, str]] = []
        stack = [records[len(records) // 2 :], records[: len(records) // 2]]
        while stack:
            chunk = stack.pop()
            if not chunk:
                continue
            try:
                async with self._sessions.begin() as session:
                    part = await write_group(session, chunk, [])
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                if len(chunk) == 1:
                    refused.append((chunk[0], f"database refused it: {database_reason(exc)}"))
                else:
                    stack += [chunk[len(chunk) // 2 :], chunk[: len(chunk) // 2]]
                continue
            result.inserted |= part.inserted
            result.refused += part.refused
        await self._write_dead_letters(
            [DeadLetterEntry(why, r.payload, r.api_key, r.event.source) for r, why in refused]
        )
        result.refused += refused
        return result

    async def _write_dead_letters(self, dead: list[DeadLetterEntry]) -> None:
        if not dead:
            return
        try:
            async with self._sessions.begin() as session:
                await write_group(session, [], dead)
            return
        except Exception as exc:
            if database_unavailable(exc):
                raise
        for letter in dead:  # the rows are plain text with NUL escaped: this is not expected to be reached
            try:
                async with self._sessions.begin() as session:
                    await write_group(session, [], [letter])
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                log.error("dead letter refused (%s): %r", database_reason(exc), letter)

    async def _replay_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replay_now.wait(), REPLAY_INTERVAL_SECONDS)
            self._replay_now.clear()
            try:
                if not await self.replay_pending():
                    self._spool_dirty = False
            except Exception as exc:
                if not database_unavailable(exc):
                    log.exception("could not replay the spool; it stays there")

    async def replay_pending(self) -> int:
        """Write the spool back, several files per transaction (up to ``max_batch`` records; a larger file goes
        alone), oldest first, as many transactions at a time as there are writers (each decodes its records in a
        thread while another writes). A file is removed only after its records are committed. Returns the number
        of files replayed; raises (after the transactions under way end) if the database is away or refuses.
        Exactly-once holds through crashes: a file replayed again yields only duplicates."""
        slots = asyncio.Semaphore(self._writers)
        tasks: list[asyncio.Task[int]] = []

        async def replay(batch: list[tuple[Path, SpoolFile]]) -> int:
            try:
                return await self._replay(batch)
            finally:
                slots.release()

        batch: list[tuple[Path, SpoolFile]] = []
        size = 0
        for path in self._spool.pending():
            if any(task.done() and task.exception() for task in tasks):
                break  # the database is away or refused a batch: stop reading; the rest waits for next time
            try:
                content = await asyncio.to_thread(self._spool.read, path)
            except FileNotFoundError:  # another service process replayed it meanwhile (serve --workers)
                continue
            if batch and size + len(content.records) > self._max_batch:
                await slots.acquire()
                tasks.append(asyncio.create_task(replay(batch)))
                batch, size = [], 0
            batch.append((path, content))
            size += len(content.records)
        if batch and not any(task.done() and task.exception() for task in tasks):
            await slots.acquire()
            tasks.append(asyncio.create_task(replay(batch)))
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(o for o in outcomes if isinstance(o, int))

    def _appended(self) -> None:
        for listener in self.on_append:
            listener()

    async def replay_file(self, path: Path) -> int:
        """Replay one spool file in a transaction of its own; returns the number of new events."""
        content = await asyncio.to_thread(self._spool.read, path)
        records, dead = await asyncio.to_thread(_from_spool, [content])
        result = await self._write_isolating(records, dead)
        await asyncio.to_thread(path.unlink)
        self._appended()
        return len(result.inserted)

    async def _replay(self, batch: list[tuple[Path, SpoolFile]]) -> int:
        records, dead = await asyncio.to_thread(_from_spool, [content for _, content in batch])
        result = await self._write_isolating(records, dead)
        await asyncio.to_thread(_unlink_all, [path for path, _ in batch])  # only now: the records are committed
        self._appended()
        log.info("replayed %d spool files: %d records, %d new", len(batch), len(records), len(result.inserted))
        return len(batch)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _from_spool(contents: list[SpoolFile]) -> tuple[list[DecodedRecord], list[DeadLetterEntry]]:
    """Decode spooled records again (with the tenant of the key that posted them, so the tenant rule holds)."""
    records: list[DecodedRecord] = []
    dead: list[DeadLetterEntry] = []
    for content in contents:
        dead.extend(DeadLetterEntry(d.error, d.payload, d.api_key, content.source) for d in content.dead_letters)
        for item in content.records:
            name = item.source or content.source
            source = event_source(name)
            try:
                if source is None:
                    raise ValueError(f"no event source {name!r} in this version of mtactl")
                records.extend(
                    decode_record(item.payload.encode(), source=source, api_key=item.api_key, tenant=item.tenant)
                )
            except Exception as exc:
                dead.append(DeadLetterEntry(rejection_reason(exc), item.payload, item.api_key, name))
    return records, dead


def _to_spool(records: Sequence[DecodedRecord], dead: Sequence[DeadLetterEntry]) -> SpoolFile:
    # A record split per recipient is spooled once: decoded again, it gives the same events.
    unique = dict.fromkeys((r.payload, r.api_key, r.tenant, r.event.source) for r in records)
    return SpoolFile(
        source=records[0].event.source if records else (dead[0].source if dead else ""),
        records=[SpooledRecord(*record) for record in unique],
        dead_letters=[SpooledDeadLetter(d.error, d.payload, d.api_key) for d in dead],
    )


def _settle(group: list[Submission], result: WriteResult) -> None:
    refused = {id(record): why for record, why in result.refused}
    claimed: set[bytes] = set()
    for submission in group:
        accepted = duplicates = 0
        rejected: list[RejectedRecord] = []
        seen: set[bytes] = set()
        for record in submission.records:
            why = refused.get(id(record))
            if why is not None:
                rejected.append(RejectedRecord(index=record.index, error=why))
            elif record.key in seen or record.key not in result.inserted or record.key in claimed:
                duplicates += 1
                seen.add(record.key)
            else:
                seen.add(record.key)
                claimed.add(record.key)
                accepted += 1
        _resolve(submission, IngestOutcome(accepted, duplicates, 0, tuple(rejected)))


def _resolve(submission: Submission, outcome: IngestOutcome) -> None:
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
