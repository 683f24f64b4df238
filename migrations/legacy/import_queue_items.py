"""Move legacy ``QueueItem`` records (JSON array, NDJSON or CSV) into ``message_queue``, and prove nothing was lost.

* Every row is validated as a legacy ``QueueItem`` and again as the ``MessageQueueItem`` it maps to; a row that
  fails either is written, with its row number and reason, to a reject report (NDJSON) and never dropped silently.
* Inserts are idempotent (``ON CONFLICT (id) DO NOTHING`` on a deterministic id), so re-running a file imports
  nothing twice.
* The checksum is an order-independent multiset hash: the sum modulo 2**256 of the SHA-256 of each valid item's
  canonical JSON, plus the count. ``verify`` recomputes it from the database by mapping every stored message back
  to the legacy shape; equal checksums mean every valid input item can be restored exactly from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import gc
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, TypeVar

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.legacy import QueueItem, adapt_legacy_to_message, adapt_message_to_legacy, legacy_message_uuid
from adapters.model import MessageQueueItem, normalize_address, validated
from controlplane.audit.service import AuditLog
from controlplane.db.messages import existing_ids, fetch_by_ids, insert_new
from migrations.legacy.reasons import describe

BATCH_SIZE = 5000  # rows a transaction; larger batches gained nothing measurable (bench/legacy_import.py)
ProgressCallback = Callable[[int], None]


class ImportReport(msgspec.Struct, kw_only=True):
    file: str
    format: str
    dry_run: bool
    rows: int
    valid: int
    rejected: int
    duplicates_in_file: int
    imported: int
    already_present: int
    checksum: str
    reject_report: str | None
    # The first few rejected rows' reasons, so a dry run (which writes no report) still says what is wrong.
    first_rejections: list[RejectionSummary]


class VerifyReport(msgspec.Struct, kw_only=True):
    file: str
    rows: int
    valid: int
    file_checksum: str
    database_checksum: str
    missing: list[str]
    mismatched: list[str]
    ok: bool


class RejectionSummary(msgspec.Struct, kw_only=True):
    row: int
    id: str | None
    error: str


class Rejection(msgspec.Struct, kw_only=True):
    row: int
    id: str | None
    error: str
    raw: Any


FIRST_REJECTIONS = 10


class RejectReport:
    """The reject report (NDJSON), created at the first rejected row: a clean import leaves no file behind, and a
    dry run (``path=None``) writes none at all."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self.first: list[RejectionSummary] = []
        self._handle: BinaryIO | None = None

    def add(self, entry: Rejection) -> None:
        self.count += 1
        if len(self.first) < FIRST_REJECTIONS or entry.row < self.first[-1].row:
            # The lowest rows, not the first written: a row that fails only as a message is found a batch later.
            summary = RejectionSummary(row=entry.row, id=entry.id, error=entry.error)
            self.first = sorted([*self.first, summary], key=lambda r: r.row)[:FIRST_REJECTIONS]
        if self.path is None:
            return
        if self._handle is None:
            self._handle = self.path.open("wb")
        self._handle.write(msgspec.json.encode(entry) + b"\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class MultisetChecksum:
    MODULUS = 2**256

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def add(self, canonical: bytes) -> None:
        self.add_digest(hashlib.sha256(canonical).digest())

    def add_digest(self, digest: bytes) -> None:
        """Add an item by the SHA-256 of its canonical form (the importer has it already, as the row's fingerprint)."""
        self.total = (self.total + int.from_bytes(digest, "big")) % self.MODULUS
        self.count += 1

    def hexdigest(self) -> str:
        return f"{self.count}:{self.total:064x}"


def detect_format(path: Path) -> str:
    """``csv`` by suffix; ``json`` for an array or one (pretty-printed) object; ``ndjson`` for one object a line."""
    if path.suffix.lower() == ".csv":
        return "csv"
    with path.open("rb") as handle:
        first = next((line.strip() for line in handle if line.strip()), b"")
    if first.startswith(b"["):
        return "json"
    if first.startswith(b"{"):
        try:
            json.loads(first)
        except ValueError:
            # The first line is not a whole object: one object spread over several lines (as an editor or
            # `jq .` writes it), unless the file is not JSON at all, when NDJSON's per-line rejects explain more.
            try:
                whole = json.loads(path.read_bytes())
            except ValueError:
                return "ndjson"
            return "json" if isinstance(whole, dict) else "ndjson"
    return "ndjson"


def count_rows(path: Path, file_format: str) -> int | None:
    """Rows to expect, for the progress bar (None when counting would cost a full parse)."""
    if file_format == "json":
        return None
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(0, lines - 1) if file_format == "csv" else lines


def read_rows(path: Path, file_format: str) -> Iterator[tuple[int, Any]]:
    """(row number, raw record) pairs; a record that is not even JSON comes back as an Exception."""
    if file_format == "json":
        try:
            records = json.loads(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        if isinstance(records, dict):  # a single QueueItem
            records = [records]
        if not isinstance(records, list):
            raise ValueError(f"{path}: a JSON file must hold a QueueItem object or an array of them")
        yield from enumerate(records, start=1)
    elif file_format == "ndjson":
        with path.open("rb") as handle:
            number = 0
            for line in handle:
                if not line.strip():
                    continue
                number += 1
                try:
                    yield number, msgspec.json.decode(line)  # a third of json.loads' time
                except msgspec.DecodeError as exc:
                    yield number, ValueError(f"not JSON: {exc}")
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            for number, record in enumerate(csv.DictReader(handle), start=1):
                yield number, _from_csv(record)


def _from_csv(record: dict[str, Any]) -> dict[str, Any]:
    # CSV cells are strings: empty means "absent", and the one list field is written as JSON or ';'-separated.
    clean = {k: v for k, v in record.items() if k is not None and v not in (None, "")}
    sent = clean.get("notificationsSent")
    if isinstance(sent, str):
        try:
            clean["notificationsSent"] = json.loads(sent)
        except ValueError:
            clean["notificationsSent"] = [s for s in sent.split(";") if s]
    return clean


def parse_item(raw: Any, *, from_csv: bool) -> QueueItem:
    if isinstance(raw, Exception):
        raise raw
    return msgspec.convert(raw, QueueItem, strict=not from_csv)


def canonical(item: QueueItem) -> bytes:
    """The item's checksum form. Two representation choices are normalised because the database keeps only the
    meaning: timestamps are written in UTC, and the address's domain in lower case (domains are case-insensitive)."""
    return msgspec.json.encode(
        msgspec.structs.replace(
            item,
            customerEmail=normalize_address(item.customerEmail),
            createdAt=item.createdAt.astimezone(UTC),
            updatedAt=item.updatedAt.astimezone(UTC) if item.updatedAt else None,
        )
    )


P = ParamSpec("P")
R = TypeVar("R")


def _collector_paused(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run without the cyclic garbage collector. An import holds every row's id and fingerprint and a batch of
    parsed rows, and the collector's full passes walked all of it again and again: with it paused a re-run spent
    30 instead of 50 µs of CPU a row (30,000 rows, side by side). What an import allocates is freed by reference
    counting; the few cycles (a session, a task per batch) wait for the collector's return."""

    @functools.wraps(function)
    async def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return await function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return paused


@_collector_paused
async def import_legacy_file(
    sessions: async_sessionmaker[AsyncSession],
    audit: AuditLog,
    path: Path,
    *,
    dry_run: bool = False,
    sender: str = "",
    reject_report: Path | None = None,
    progress: ProgressCallback | None = None,
    actor: str = "cli",
) -> ImportReport:
    file_format = detect_format(path)
    if reject_report is None and not dry_run:
        reject_report = path.with_name(path.name + ".rejects.ndjson")
    if reject_report is not None:
        reject_report.unlink(missing_ok=True)  # a report left by an earlier run would describe that run
    rejects = RejectReport(reject_report)
    checksum = MultisetChecksum()
    seen: dict[str, bytes] = {}
    rows = duplicates = imported = already = 0
    # Rows valid as legacy items, waiting for the stored ones among them to be looked up: a stored row is counted
    # and nothing more (it passed every check when it was imported), so a re-run costs a parse and one indexed
    # lookup per row, not the mapping, validation and insert.
    pending: list[tuple[int, Any, QueueItem, bytes, uuid.UUID]] = []
    # One batch is written while the next is parsed: the database works in its own thread (SQLite) or process
    # (Postgres) meanwhile, so the import takes about the longer of the two, not their sum.
    writing: asyncio.Task[set[uuid.UUID]] | None = None
    writing_rows = 0

    def reject(number: int, raw: Any, error: str) -> None:
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        rejects.add(
            Rejection(
                row=number,
                id=str(raw_id) if raw_id is not None else None,
                error=error,
                raw=None if isinstance(raw, Exception) else raw,
            )
        )

    async def write(messages: list[MessageQueueItem]) -> set[uuid.UUID]:
        async with sessions.begin() as session:
            return await insert_new(session, messages)

    async def settle() -> None:
        nonlocal writing, imported, already
        if writing is not None:
            task, writing = writing, None
            inserted = await task
            imported += len(inserted)
            already += writing_rows - len(inserted)

    async def flush() -> None:
        nonlocal already, writing, writing_rows
        if not pending:
            return
        present: set[uuid.UUID] = set()
        if not dry_run:
            async with sessions() as session:
                present = await existing_ids(session, [p[4] for p in pending])
        fresh: list[MessageQueueItem] = []
        for number, raw, item, fingerprint, message_uuid in pending:
            if message_uuid in present:
                already += 1
                checksum.add_digest(fingerprint)
                continue
            try:
                message = validated(adapt_legacy_to_message(item, sender=sender))
            except (msgspec.ValidationError, ValueError, TypeError) as exc:
                reject(number, raw, describe(exc, raw))
                continue
            checksum.add_digest(fingerprint)
            fresh.append(message)
        pending.clear()
        await settle()
        if fresh and not dry_run:
            writing, writing_rows = asyncio.create_task(write(fresh)), len(fresh)
            await asyncio.sleep(0)  # let it reach the database before parsing goes on

    from_csv = file_format == "csv"
    try:
        for number, raw in read_rows(path, file_format):
            rows += 1
            if writing is not None and rows % 256 == 0:
                await asyncio.sleep(0)  # parsing never awaits: give the writer its turns
            try:
                item = parse_item(raw, from_csv=from_csv)
            except (msgspec.ValidationError, ValueError, TypeError) as exc:
                reject(number, raw, describe(exc, raw))
                continue
            encoded = canonical(item)
            fingerprint = _fingerprint(encoded)
            previous = seen.get(item.id)
            if previous is not None:
                if previous == fingerprint:
                    duplicates += 1
                else:
                    reject(number, raw, "id repeats an earlier row with different content")
                continue
            seen[item.id] = fingerprint
            pending.append((number, raw, item, fingerprint, legacy_message_uuid(item.id)))
            if len(pending) >= BATCH_SIZE:
                await flush()
            if progress:
                progress(number)
        await flush()
        await settle()
    finally:
        rejects.close()
        if writing is not None:  # an error stopped the import: the batch in flight is finished, not abandoned
            with contextlib.suppress(Exception):
                await writing
    written = rejects.path is not None and rejects.count > 0
    report = ImportReport(
        file=str(path),
        format=file_format,
        dry_run=dry_run,
        rows=rows,
        valid=checksum.count,
        rejected=rejects.count,
        duplicates_in_file=duplicates,
        imported=imported,
        already_present=already,
        checksum=checksum.hexdigest(),
        reject_report=str(rejects.path) if written else None,
        first_rejections=rejects.first,
    )
    if not dry_run:
        await audit.record(
            actor=actor, action="legacy.import", target=str(path), success=True, detail=msgspec.to_builtins(report)
        )
    return report


def _fingerprint(encoded: bytes) -> bytes:
    return hashlib.sha256(encoded).digest()


async def verify_legacy_file(sessions: async_sessionmaker[AsyncSession], path: Path) -> VerifyReport:
    """Recompute the import checksum from the database for every valid item of ``path``."""
    file_format = detect_format(path)
    expected = MultisetChecksum()
    found = MultisetChecksum()
    missing: list[str] = []
    mismatched: list[str] = []
    pending: dict[str, bytes] = {}

    async def check(ids: dict[str, bytes]) -> None:
        by_uuid = {legacy_message_uuid(legacy_id): legacy_id for legacy_id in ids}
        async with sessions() as session:
            stored = await fetch_by_ids(session, by_uuid)
        for message_uuid, legacy_id in by_uuid.items():
            message = stored.get(message_uuid)
            if message is None:
                missing.append(legacy_id)
                continue
            restored = canonical(adapt_message_to_legacy(message, now=message.created_at))
            found.add(restored)
            if restored != ids[legacy_id]:
                mismatched.append(legacy_id)

    seen: set[str] = set()
    rows = 0
    for _, raw in read_rows(path, file_format):
        rows += 1
        try:
            item = parse_item(raw, from_csv=file_format == "csv")
            validated(adapt_legacy_to_message(item))
        except (msgspec.ValidationError, ValueError, TypeError):
            continue  # rejected at import too; the reject report accounts for it
        if item.id in seen:
            continue
        seen.add(item.id)
        encoded = canonical(item)
        expected.add(encoded)
        pending[item.id] = encoded
        if len(pending) >= BATCH_SIZE:
            await check(pending)
            pending = {}
    await check(pending)
    return VerifyReport(
        file=str(path),
        rows=rows,
        valid=expected.count,
        file_checksum=expected.hexdigest(),
        database_checksum=found.hexdigest(),
        missing=missing,
        mismatched=mismatched,
        # A file without one valid row proves nothing about the database: that is not a success.
        ok=expected.count > 0 and not missing and not mismatched and expected.hexdigest() == found.hexdigest(),
    )


def dump(report: msgspec.Struct) -> str:
    return json.dumps(msgspec.to_builtins(report), indent=2)
