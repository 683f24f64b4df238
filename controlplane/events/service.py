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
from typing import Any, NamedTuple, cast

import msgspec
from sqlalchemy import ColumnElement, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.kumomta.events import KumoLogRecord, nesting_depth, record_decoder, split_body
from adapters.kumomta.mapping import dedupe_key, observe
from adapters.model import assume_utc, recipient_domain
from adapters.model.observation import MessageObservation, check_against_model
from controlplane.db.engine import database_unavailable
from controlplane.db.events import (
    EVENTS,
    insert_dead_letters,
    insert_events,
    select_dead_letters,
    select_events,
    select_message_events,
)
from controlplane.db.mirror import TenantChanged, apply_observations, message_tenants
from controlplane.db.tables import MessageRow
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
    index: int = 0  # its place in the request's body, for the reply's ``rejected``
    tenant: str | None = None  # the tenant of the key that posted it, if the key is tenant-bound


@dataclass
class DeadLetterEntry:
    error: str
    payload: str
    api_key: str | None


class TooManyRecords(MtactlError):
    status_code = 413
    code = "too_many_records"


# Records nesting arrays/objects deeper than this are refused: the JSON decoders (msgspec here, jsonb in
# Postgres) recurse, and a real log record nests a few levels.
MAX_NESTING = 64
DEFAULT_MAX_DEAD_LETTERS = 1000
_MAX_REASON = 300


def decode_body(
    body: bytes,
    *,
    api_key: str | None,
    tenant: str | None,
    max_records: int | None = None,
    max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS,
) -> tuple[list[DecodedRecord], list[DeadLetterEntry], list[RejectedRecord]]:
    """Split a POST body into decodable records and dead letters (with the index and reason of each reject).

    Every fault of one record is that record's: whatever decoding it raises, it is answered in ``rejected`` and
    the others go on. At most ``max_dead_letters`` rejects are kept as dead letters; beyond that one more dead
    letter says how many were not kept. More than ``max_records`` records raise ``TooManyRecords`` (413).
    """
    records: list[DecodedRecord] = []
    dead: list[DeadLetterEntry] = []
    rejected: list[RejectedRecord] = []
    try:
        raws = split_body(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        text = storable_text(body.decode("utf-8", errors="replace"))
        reason = _short(f"body is not JSON: {exc}")
        dead.append(DeadLetterEntry(error=reason, payload=text, api_key=api_key))
        return records, dead, [RejectedRecord(index=0, error=reason)]
    if max_records is not None and len(raws) > max_records:
        raise TooManyRecords(
            f"{len(raws)} records in one request; at most {max_records} are taken "
            f"(MTACTL_INGEST_MAX_RECORDS_PER_REQUEST): send smaller batches"
        )
    not_kept = 0
    for index, view in enumerate(raws):
        raw = bytes(view)
        try:
            records.extend(decode_record(raw, index=index, api_key=api_key, tenant=tenant))
        except Exception as exc:
            reason = rejection_reason(exc)
            rejected.append(RejectedRecord(index=index, error=reason))
            if len(dead) < max_dead_letters:
                dead.append(DeadLetterEntry(reason, storable_text(raw.decode("utf-8", errors="replace")), api_key))
            else:
                not_kept += 1
    if not_kept:
        dead.append(
            DeadLetterEntry(
                f"{not_kept} more records of this request were rejected and not kept "
                f"(MTACTL_INGEST_MAX_DEAD_LETTERS_PER_REQUEST is {max_dead_letters})",
                "",
                api_key,
            )
        )
    return records, dead, rejected


def decode_record(raw: bytes, *, index: int = 0, api_key: str | None, tenant: str | None) -> list[DecodedRecord]:
    """One raw record -> records ready to write, having checked everything the database could refuse in it (so a
    refused write is truly exceptional) and, for records that move the mirror, the model's rules. Raises on
    any fault (``rejection_reason`` words it). A record listing several recipients gives one per recipient, all
    with its payload and index (see adapters.kumomta.mapping); a fault in any of them refuses the whole record."""
    payload = storable_text(raw.decode("utf-8", errors="replace"))
    # Counting brackets is cheap; only a record with many of them is scanned for its depth.
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and nesting_depth(raw) > MAX_NESTING:
        raise ValueError(f"nested more than {MAX_NESTING} levels deep")
    record = record_decoder.decode(raw)
    if "\\u0000" in payload:  # JSON text carries a NUL only escaped, so most records need no walk
        record = without_nul(record)
    _utc(record.occurred_at(), "event_time" if record.event_time else "timestamp")
    return [_decoded_part(part, payload, index, api_key, tenant) for part in record.per_recipient()]


def _decoded_part(
    record: KumoLogRecord, payload: str, index: int, api_key: str | None, tenant: str | None
) -> DecodedRecord:
    domain = recipient_domain(record.recipient)
    if len(domain) > DERIVED_COLUMN_WIDTHS["domain"]:
        raise ValueError(f"recipient domain is longer than {DERIVED_COLUMN_WIDTHS['domain']} characters")
    observation = observe(record)
    if tenant is not None and (observation.tenant_id if observation else None) != tenant:
        raise ValueError(f"this API key may only ingest records of tenant {tenant!r}")
    if observation is not None:
        _check_lengths(observation)
        _utc(observation.created_at, "created")
        check_against_model(observation)
    return DecodedRecord(payload, record, dedupe_key(record), observation, api_key, index, tenant)


def _utc(value: datetime, name: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} is out of range (years 1 to 9999 in UTC)") from None


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
    return _short(text)


def _short(text: str) -> str:
    text = storable_text(text.splitlines()[0] if text else text)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def storable_text(text: str) -> str:
    """Postgres text cannot hold NUL; the one change made to a kept payload is writing it as the escape \\u0000."""
    return text.replace("\x00", "\\u0000")


def without_nul(record: KumoLogRecord) -> KumoLogRecord:
    """The record with every NUL in its strings (and mapping keys) written as the six characters \\u0000, which
    Postgres can store (it refuses NUL in text and in jsonb) and SQLite then stores the same."""
    return msgspec.convert(_escape_nul(msgspec.to_builtins(record)), KumoLogRecord)


def _escape_nul(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(k): _escape_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_nul(v) for v in value]
    return value


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


@dataclass
class WriteResult:
    inserted: set[bytes] = field(default_factory=set)  # keys of the events that were new
    refused: list[tuple[DecodedRecord, str]] = field(default_factory=list)  # records not written, and why


TENANT_REFUSAL = "the message belongs to another tenant (a tenant-bound key may touch only its tenant's messages)"


async def write_group(
    session: AsyncSession, records: Sequence[DecodedRecord], dead_letters: Sequence[DeadLetterEntry]
) -> WriteResult:
    """Write one group in the caller's transaction. Records of tenant-bound keys about another tenant's message
    are refused (kept as dead letters) rather than written."""
    received_at = datetime.now(UTC)
    refused = await _other_tenants_messages(session, records)
    if refused:
        skipped = {id(record) for record, _ in refused}
        records = [r for r in records if id(r) not in skipped]
        dead_letters = [*dead_letters, *(DeadLetterEntry(why, r.payload, r.api_key) for r, why in refused)]
    unique = list({r.key: r for r in records}.values())
    inserted = await insert_events(session, [event_row(r, received_at) for r in unique])
    # Only new events move the mirror: a replayed duplicate has been applied already.
    new = [r for r in unique if r.key in inserted and r.observation]
    bound = [r.observation for r in new if r.observation and r.tenant is not None]
    if bound:  # raises TenantChanged if another writer gave one of these messages to another tenant meanwhile
        await apply_observations(session, bound, same_tenant_only=True)
    await apply_observations(session, [r.observation for r in new if r.observation and r.tenant is None])
    await insert_dead_letters(
        session,
        [
            {"received_at": received_at, "source": SOURCE, "error": d.error, "payload": d.payload, "api_key": d.api_key}
            for d in dead_letters
        ],
    )
    return WriteResult(inserted, refused)


async def _other_tenants_messages(
    session: AsyncSession, records: Sequence[DecodedRecord]
) -> list[tuple[DecodedRecord, str]]:
    """The records of tenant-bound keys that would touch a message which is not their tenant's: stored with
    another tenant (or none), or created in this same group for another tenant."""
    bound_ids = {r.observation.id for r in records if r.tenant is not None and r.observation is not None}
    if not bound_ids:
        return []
    owners: dict[Any, str | None] = await message_tenants(session, bound_ids)
    refused = []
    for record in records:
        observation = record.observation
        if observation is None:
            continue
        if record.tenant is None:
            owners.setdefault(observation.id, observation.tenant_id)
        elif owners.setdefault(observation.id, record.tenant) != record.tenant:
            refused.append((record, TENANT_REFUSAL))
    return refused


def database_reason(exc: BaseException) -> str:
    """What the database said, in one short line (not SQLAlchemy's text, which quotes the statement and its
    parameters)."""
    cause: BaseException = exc
    while True:
        inner = getattr(cause, "orig", None) or cause.__cause__
        if inner is None or inner is cause:
            break
        cause = inner
    text = str(cause).strip()
    return _short(f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__)


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
                    why = (
                        TENANT_REFUSAL
                        if isinstance(exc, TenantChanged)
                        else f"database refused it: {database_reason(exc)}"
                    )
                    refused.append((chunk[0], why))
                else:
                    stack += [chunk[len(chunk) // 2 :], chunk[: len(chunk) // 2]]
                continue
            result.inserted |= part.inserted
            result.refused += part.refused
        await self._write_dead_letters([DeadLetterEntry(why, r.payload, r.api_key) for r, why in refused])
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
            content = await asyncio.to_thread(self._spool.read, path)
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

    async def replay_file(self, path: Path) -> int:
        """Replay one spool file in a transaction of its own; returns the number of new events."""
        content = await asyncio.to_thread(self._spool.read, path)
        records, dead = await asyncio.to_thread(_from_spool, [content])
        result = await self._write_isolating(records, dead)
        await asyncio.to_thread(path.unlink)
        return len(result.inserted)

    async def _replay(self, batch: list[tuple[Path, SpoolFile]]) -> int:
        records, dead = await asyncio.to_thread(_from_spool, [content for _, content in batch])
        result = await self._write_isolating(records, dead)
        await asyncio.to_thread(_unlink_all, [path for path, _ in batch])  # only now: the records are committed
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
        dead.extend(DeadLetterEntry(d.error, d.payload, d.api_key) for d in content.dead_letters)
        for item in content.records:
            try:
                records.extend(decode_record(item.payload.encode(), api_key=item.api_key, tenant=item.tenant))
            except Exception as exc:
                dead.append(DeadLetterEntry(rejection_reason(exc), item.payload, item.api_key))
    return records, dead


def _to_spool(records: Sequence[DecodedRecord], dead: Sequence[DeadLetterEntry]) -> SpoolFile:
    # A record split per recipient is spooled once (identical records are one record: their events are the same).
    unique = dict.fromkeys((r.payload, r.api_key, r.tenant) for r in records)
    return SpoolFile(
        source=SOURCE,
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
