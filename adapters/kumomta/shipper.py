"""The KumoMTA log shipper: runs on a kumod host, reads the segments kumod's local logger writes anyway, and posts
them in large batches to mtactl's ``POST /api/v1/events/ingest/kumomta`` (no queue capacity spent in kumod, unlike
a log hook). ``kumomta_logs`` is its command, ``mtactl ship kumomta-logs``.

Delivery is at least once: the checkpoint moves past a batch only after mtactl answered 202 (it answers so only
once the batch is durable), and anything else is retried, never skipped. mtactl deduplicates records, so a batch
sent again after a crash counts as duplicates: in effect, each record is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
import msgspec

from adapters.kumomta.segments import Checkpoint, Chunk, LogCursor, Position

log = logging.getLogger("mtactl.shipper")

INGEST_PATH = "/api/v1/events/ingest/kumomta"
DEFAULT_BATCH = 5000
# mtactl's default MTACTL_INGEST_MAX_RECORDS_PER_REQUEST; more in one request is a 413.
MAX_BATCH = 10_000
# The HTTP framework under mtactl refuses bodies over 10 MB by default: stay below it whatever the record size.
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
RETRYABLE = {408, 425, 429}


class ShipRefused(Exception):
    """mtactl answered what retrying will not change (bad key, wrong URL, batch too large): stop and say so."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class _Stopped(Exception):
    """Asked to stop while a batch was being retried: it stays unacknowledged, the checkpoint before it."""


class Rejected(msgspec.Struct):
    index: int
    error: str


class IngestReply(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: list[Rejected]
    spooled: int


@dataclass
class ShipStats:
    records: int = 0  # acknowledged by a 202
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    spooled: int = 0
    batches: int = 0
    retries: int = 0
    position: Position | None = None

    def as_dict(self) -> dict[str, object]:
        position = msgspec.to_builtins(self.position) if self.position else None
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {"position": position}


@dataclass
class Batch:
    body: bytes
    origins: list[tuple[str, int]]
    end: Position

    @property
    def records(self) -> int:
        return len(self.origins)


@dataclass
class Shipper:
    """Ships ``directory`` to ``endpoint`` through ``client`` (which carries no key: ``api_key`` is added per
    request). ``follow``: keep waiting for new records; otherwise stop at the end of what is written now."""

    directory: Path
    endpoint: str
    api_key: str
    client: httpx.AsyncClient
    checkpoint: Checkpoint
    batch_size: int = DEFAULT_BATCH
    max_bytes: int = DEFAULT_MAX_BYTES
    latency: float = 1.0  # in follow mode, a partial batch waits this long for more records
    poll: float = 0.25
    backoff: float = 0.5
    max_backoff: float = 30.0
    stats: ShipStats = field(default_factory=ShipStats)
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """Finish the batch in flight (or give up waiting for it) and return; the checkpoint stays consistent."""
        self._stop.set()

    async def run(self, *, follow: bool) -> ShipStats:
        start = self.checkpoint.load()
        self.stats.position = start
        cursor = LogCursor(self.directory, start)
        try:
            # The next batch is read (in a thread: decompression releases the GIL) while this one is posted.
            batch = await asyncio.to_thread(self._next_batch, cursor, follow)
            while batch is not None and not self._stop.is_set():
                reading = asyncio.ensure_future(asyncio.to_thread(self._next_batch, cursor, follow))
                try:
                    await self._deliver(batch)
                except BaseException:
                    self._stop.set()
                    await asyncio.wait([reading])  # the cursor is closed below: let the read finish first
                    raise
                self.checkpoint.save(batch.end)
                self.stats.position = batch.end
                batch = await reading
            # The last read found no record, only finished segments (or empty lines): the checkpoint moves past
            # them, so that a restart does not decompress them again.
            if batch is None and cursor.position is not None and cursor.position != self.stats.position:
                self.checkpoint.save(cursor.position)
                self.stats.position = cursor.position
        except _Stopped:
            pass
        finally:
            cursor.close()
        return self.stats

    def _next_batch(self, cursor: LogCursor, follow: bool) -> Batch | None:
        chunk = Chunk()
        first_seen = 0.0
        while not self._stop.is_set():
            if cursor.read(chunk, self.batch_size, self.max_bytes):
                break
            if not follow:
                break
            if chunk.lines:
                first_seen = first_seen or time.monotonic()
                if time.monotonic() - first_seen >= self.latency:
                    break
            self._stop.wait(self.poll)
        if not chunk.lines or cursor.position is None:
            return None
        return Batch(encode_array(chunk.lines), chunk.origins, cursor.position)

    async def _deliver(self, batch: Batch) -> None:
        """Post until mtactl answers 202; raise ShipRefused on an answer retrying cannot change."""
        delay = self.backoff
        while True:
            wait = delay
            try:
                response = await self.client.post(
                    self.endpoint,
                    content=batch.body,
                    headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
                )
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 202:
                    self._count(batch, response)
                    return
                if not retryable(response.status_code):
                    raise ShipRefused(response.status_code, error_detail(response))
                why = f"{response.status_code}: {error_detail(response)}"
                wait = max(wait, retry_after(response))
            if self._stop.is_set():
                raise _Stopped
            self.stats.retries += 1
            wait = min(wait, self.max_backoff) * random.uniform(0.8, 1.2)
            log.warning("batch of %d records not taken (%s); sending it again in %.1f s", batch.records, why, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_backoff)

    def _count(self, batch: Batch, response: httpx.Response) -> None:
        try:
            reply = msgspec.json.decode(response.content, type=IngestReply)
        except msgspec.DecodeError:
            raise ShipRefused(202, f"not mtactl's ingest reply: {response.text[:200]!r}") from None
        # mtactl counts a record listing N recipients as N events (kumod's batch handling), so a reply may account
        # for more than the lines sent, never for fewer.
        if reply.accepted + reply.duplicates + len(reply.rejected) < batch.records:
            raise ShipRefused(202, f"the reply accounts for fewer than the {batch.records} records sent: {reply}")
        self.stats.records += batch.records
        self.stats.accepted += reply.accepted
        self.stats.duplicates += reply.duplicates
        self.stats.rejected += len(reply.rejected)
        self.stats.spooled += reply.spooled
        self.stats.batches += 1
        if reply.rejected:
            first = reply.rejected[0]
            segment, line = batch.origins[first.index] if 0 <= first.index < batch.records else ("?", 0)
            log.warning(
                "%d records refused by mtactl, kept in its dead letters; first: %s line %d: %s",
                len(reply.rejected),
                segment,
                line,
                first.error,
            )
        log.debug("shipped %d records up to %s", batch.records, batch.end)


def encode_array(lines: list[bytes]) -> bytes:
    """A JSON array of the lines as they are. A line that is not JSON (a template, a stray header) is sent as a
    JSON string, so that mtactl refuses that record alone (into its dead letters) instead of the whole body."""
    body = b"[" + b",".join(lines) + b"]"
    try:
        # One pass over the whole body; a line such as `1,2` would parse but be two records, hence the count.
        if len(msgspec.json.decode(body, type=list[msgspec.Raw])) == len(lines):
            return body
    except msgspec.DecodeError:
        pass
    return b"[" + b",".join(_as_json(line) for line in lines) + b"]"


def _as_json(line: bytes) -> bytes:
    try:
        msgspec.json.decode(line, type=msgspec.Raw)
        return line
    except msgspec.DecodeError:
        return msgspec.json.encode(line.decode("utf-8", errors="replace"))


def retryable(status: int) -> bool:
    return status >= 500 or status in RETRYABLE


def retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0


def error_detail(response: httpx.Response) -> str:
    """mtactl's error message (its ErrorBody), else the start of the body."""
    try:
        message = msgspec.json.decode(response.content).get("message")
        if isinstance(message, str):
            return message
    except (msgspec.DecodeError, AttributeError):
        pass
    return response.reason_phrase + (f" {response.text[:200]!r}" if response.content else "")


def ingest_endpoint(url: str) -> str:
    """mtactl's base URL (or the ingest URL itself) -> the ingest URL."""
    url = url.rstrip("/")
    return url if url.endswith(INGEST_PATH) else url + INGEST_PATH


# ---------------------------------------------------------------------------------------------------------------
# The command (added to `mtactl ship` through adapters.shippers)


@click.command("kumomta-logs")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", required=True, help="mtactl's base URL, e.g. http://mtactl.internal:8080")
@click.option(
    "--key-env",
    default="MTACTL_SHIP_KEY",
    show_default=True,
    help="Environment variable holding an API key with scope events:ingest",
)
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where progress is kept  [default: DIRECTORY/.mtactl-shipper]",
)
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    default=DEFAULT_BATCH,
    show_default=True,
    help=f"Records per request (mtactl takes at most MTACTL_INGEST_MAX_RECORDS_PER_REQUEST, {MAX_BATCH:,} by default)",
)
@click.option(
    "--follow/--once",
    default=True,
    show_default=True,
    help="Keep following the segment kumod is writing, or stop at the end of what is written now",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every batch")
def kumomta_logs(
    directory: Path, url: str, key_env: str, checkpoint_path: Path | None, batch: int, follow: bool, verbose: bool
) -> None:
    """Ship kumod's local log segments in DIRECTORY (its `log_dir`) to mtactl.

    Segments are read oldest first, each followed until kumod marks it done; a batch is sent again until mtactl
    answers 202, and only then does the checkpoint move past it. Prints what was shipped (JSON) at the end.
    Exit status: 0, or 2 when mtactl refused some records (they are in its dead letters), 1 when it refused the
    requests themselves (bad key, wrong URL).
    """
    api_key = os.environ.get(key_env, "").strip()
    if not api_key:
        raise click.UsageError(f"set {key_env} to an mtactl API key with scope events:ingest (--key-env names another)")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise at this volume
    endpoint = ingest_endpoint(url)
    checkpoint = Checkpoint(checkpoint_path or directory / ".mtactl-shipper")
    try:
        checkpoint.load()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def ship() -> ShipStats:
        # trust_env off: the key goes only where --url says, never through a proxy the environment names.
        async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10), trust_env=False) as client:
            shipper = Shipper(directory, endpoint, api_key, client, checkpoint, batch_size=batch)
            loop = asyncio.get_running_loop()
            for stop_signal in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(stop_signal, shipper.stop)
            return await shipper.run(follow=follow)

    log.info("shipping %s to %s (%s)", directory, endpoint, "following" if follow else "once")
    try:
        stats = asyncio.run(ship())
    except ShipRefused as refusal:
        hint = {
            401: f"the key in {key_env} is unknown or revoked",
            403: f"the key in {key_env} lacks scope events:ingest (or its tenant may not ingest these records)",
            404: "no ingest endpoint there: check --url (mtactl's base URL)",
            413: "the batch is larger than mtactl takes: lower --batch",
        }.get(refusal.status, "check --url and the key")
        raise click.ClickException(
            f"mtactl refused the batch ({refusal.status}: {refusal.detail}); {hint}. Nothing was skipped: "
            f"the checkpoint is still before that batch"
        ) from None
    click.echo(msgspec.json.encode(stats.as_dict()).decode())
    if stats.rejected:
        sys.exit(2)
