#!/usr/bin/env python3
"""Fault harness for ingestion: kill the service, stop its database, and count what was lost.

    .venv/bin/python bench/faults.py                      # Postgres, about two minutes
    .venv/bin/python bench/faults.py --backend sqlite     # the embedded default: kill -9 only
    .venv/bin/python bench/faults.py --rounds 8           # longer: 8 rounds of every Postgres stop

Everything runs on 127.0.0.1 and in a temporary folder, removed at the end (``--keep`` keeps it):

1. A private Postgres (initdb into the folder, a port of its own; never the shared server), or a SQLite file.
2. ``mtactl serve`` on it, and kumod-like clients posting realistic KumoMTA log batches at ``--rate`` records/s
   in all: a batch answered with anything but a 2xx (or not answered) is posted again, as kumod retries.
3. One bounded run of faults: the service SIGKILLed and restarted ``--kills`` times; then per round Postgres
   stopped for ``--outage`` seconds in fast mode, in immediate mode, and once more with the service killed and
   restarted while it is down (a start during an outage), each time started again and the replay timed.
4. The clients stop once every batch is acknowledged; the spool must drain; then the database is checked.

Printed: records sent / acknowledged / stored / duplicated / lost, 5xx (and 4xx, network errors), the longest
request, the replay time after each database return, and the service's peak RSS. "stored" is the distinct
dedupe keys in ``events``; "duplicated" is rows sharing a key plus mirror rows that differ from the mirror
re-derived from the stored events once each (an effect applied twice), and rollups that count more or fewer
events than ``events`` holds (the projections run in the service and are killed with it); "lost" is
acknowledged records whose key is not stored. Before checking, the harness waits for the projections to catch
up with the log (from the service's /api/v1/health/detailed). Target: 0 lost, 0 duplicated, 0 5xx, each replay
of a 10 s outage under load < 15 s.

The harness cleans up its Postgres, the service and the folder on success, failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import pwd
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.kumomta.events import record_decoder
from adapters.kumomta.log_source import KUMOMTA
from adapters.kumomta.mapping import dedupe_key
from bench.ingest import free_port, message_records, peak_rss_mb
from controlplane.events.service import decode_body, write_group
from controlplane.events.spool import Spool
from controlplane.services import Services
from controlplane.settings import Settings

PG_BIN = Path("/usr/lib/postgresql/15/bin")
INGEST = "/api/v1/events/ingest/kumomta"


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    return found if found else str(PG_BIN / name)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class PrivatePostgres:
    """initdb into ``folder``, started and stopped with pg_ctl on ``port``; run as the postgres user under root."""

    def __init__(self, folder: Path, port: int) -> None:
        self.data = folder / "pgdata"
        self.socket_dir = folder / "pgsocket"
        self.logfile = folder / "postgres.log"
        self.port = port
        self.user: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.user else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        for folder in (self.data, self.socket_dir):
            folder.mkdir(mode=0o700)
            if self.user:
                os.chown(folder, self.user.pw_uid, self.user.pw_gid)
        if self.user:
            os.chown(self.data.parent, self.user.pw_uid, self.user.pw_gid)
            self.data.parent.chmod(0o755)
        self._run(pg_tool("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.socket_dir} "
            "-c max_connections=60 -c shared_buffers=128MB"
        )
        self._run(pg_tool("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "start")

    def stop(self, mode: str) -> None:
        self._run(pg_tool("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """Whatever state it is in: stop it now (used by the clean-up)."""
        if (self.data / "postmaster.pid").exists():
            self._run(pg_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class Service:
    """``mtactl serve`` in a session of its own (so a Ctrl-C reaches only the harness, which ends it)."""

    def __init__(self, folder: Path, database_url: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "MTACTL_DATABASE_URL": database_url,
            "MTACTL_SPOOL_DIR": str(folder / "spool"),
            "MTACTL_LOG_LEVEL": os.environ.get("MTACTL_LOG_LEVEL", "WARNING"),
        }
        self.env.pop("MTACTL_REDIS_URL", None)
        self.spool = folder / "spool"
        self.logfile = (folder / "service.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_mb = 0.0
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self.logfile,
            stderr=self.logfile,
            start_new_session=True,
        )
        self.starts += 1
        async with httpx.AsyncClient() as probe:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise RuntimeError(f"mtactl serve exited with {self.process.returncode} (see service.log)")
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(f"{self.base}/api/v1/health", timeout=2)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("mtactl serve did not answer within 30 s")

    def note_rss(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb(self.process.pid))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.note_rss()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            self.process.wait(30)

    def spooled(self) -> int:
        return len(list(self.spool.glob("*.spool"))) if self.spool.exists() else 0

    def spooled_records(self) -> int:
        total = 0
        for path in self.spool.glob("*.spool") if self.spool.exists() else []:
            with contextlib.suppress(OSError):  # replayed (removed) meanwhile
                total += len(Spool(self.spool).read(path).records)
        return total


@dataclass
class Load:
    """kumod-like clients: each posts its next batch, and posts it again until it gets a 2xx."""

    base: str
    key: str
    rate: float
    batch: int
    seed: int
    sent: int = 0  # records in batches handed to a client (each counted once, however often re-posted)
    acknowledged: set[bytes] = field(default_factory=set)
    posts: int = 0
    status_5xx: int = 0
    status_4xx: int = 0
    network_errors: int = 0
    longest_request: float = 0.0
    stopping: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._messages = itertools.count()
        self._next_at = time.monotonic()

    def next_batch(self) -> tuple[bytes, list[bytes]]:
        records: list[dict[str, Any]] = []
        while len(records) < self.batch:
            records.extend(message_records(self._rng, next(self._messages)))
        encoded = [json.dumps(record).encode() for record in records]
        keys = [dedupe_key(record_decoder.decode(raw)) for raw in encoded]
        self.sent += len(encoded)
        return b"[" + b",".join(encoded) + b"]", keys

    async def client(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        ) as http:
            while not self.stopping:
                now = time.monotonic()  # pace all clients together at --rate records/s
                self._next_at = max(self._next_at, now - 1.0) + self.batch / self.rate
                if self._next_at > now:
                    await asyncio.sleep(self._next_at - now)
                body, keys = self.next_batch()
                while True:
                    started = time.monotonic()
                    try:
                        response = await http.post(INGEST, content=body)
                        status = response.status_code
                    except httpx.TransportError:
                        status = 0
                    self.posts += 1
                    self.longest_request = max(self.longest_request, time.monotonic() - started)
                    if 200 <= status < 300:
                        self.acknowledged.update(keys)
                        break
                    if status >= 500:
                        self.status_5xx += 1
                    elif status >= 400:
                        self.status_4xx += 1
                    else:
                        self.network_errors += 1
                    await asyncio.sleep(0.5)  # kumod retries the batch later


async def wait_for_replay(service: Service, since: float, limit: float) -> float | None:
    """Seconds from ``since`` until the spool is empty (None: not within ``limit``)."""
    while time.monotonic() - since < limit:
        if service.spooled() == 0:
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


async def wait_for_projections(service: Service, limit: float) -> float | None:
    """Seconds until every projection (the mirror, the rollups) has applied the whole log (None: not within
    ``limit``), read from the service's own health report."""
    since = time.monotonic()
    async with httpx.AsyncClient(base_url=service.base, timeout=10) as http:
        while time.monotonic() - since < limit:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                report = (await http.get("/api/v1/health/detailed")).json()
                if report["projections"] and all(p["events_behind"] == 0 for p in report["projections"]):
                    return time.monotonic() - since
            await asyncio.sleep(0.2)
    return None


async def faults_on_postgres(
    args: argparse.Namespace, pg: PrivatePostgres, service: Service, replays: list[tuple[str, float | None]]
) -> None:
    for round_ in range(1, args.rounds + 1):
        for mode in args.stops:
            await asyncio.sleep(args.settle)
            log(
                f"round {round_}: Postgres stopped ({'fast, and the service restarted' if mode == 'restart' else mode})"
            )
            await asyncio.to_thread(pg.stop, "fast" if mode == "restart" else mode)
            if mode == "restart":
                service.kill()
                await service.start()  # while the database is away: it must start degraded and spool
            await asyncio.sleep(args.outage)
            spooled, records = service.spooled(), service.spooled_records()
            await asyncio.to_thread(pg.start)  # returns once Postgres accepts connections
            back = time.monotonic()
            took = await wait_for_replay(service, back, args.replay_limit)
            figure = f"{took:.1f} s" if took is not None else f"not done in {args.replay_limit:.0f} s"
            rate = f", {records / took:,.0f} records/s beside the live load" if took else ""
            line = f"{mode}: {spooled} spool files ({records:,} records) replayed in {figure}{rate}"
            replays.append((line, took))
            log(f"  Postgres back; {line}")


async def kills(args: argparse.Namespace, service: Service) -> None:
    for n in range(1, args.kills + 1):
        await asyncio.sleep(args.settle)
        log(f"SIGKILL {n}/{args.kills} of the service")
        service.kill()
        await service.start()


MIRROR_QUERY = "SELECT * FROM message_queue ORDER BY id"
# Every event counted once by the rollups: the per-minute rows of dimension "all", record types only.
ROLLUP_TOTAL = "SELECT sum(events) FROM event_rollups WHERE dimension = 'all' AND metric NOT LIKE 'delivery_le_%'"


def mirror_row(row: dict[str, Any]) -> str:
    """A message's mirror row, every column but when it was last written, as comparable text."""
    return repr(sorted((name, value) for name, value in row.items() if name != "updated_at"))


@dataclass
class Stored:
    keys: set[bytes]
    duplicate_rows: int
    mirror: dict[Any, str]  # message id -> mirror_row, for the sampled messages
    payloads: list[str]  # the stored events of the sampled messages
    events: int = 0  # rows in events
    counted: int = 0  # events the rollups counted (dimension "all", record types only)


async def stored_postgres(dsn: str, sample: int, seed: int) -> Stored:
    connection = await asyncpg.connect(dsn)
    try:
        keys = [bytes(r[0]) for r in await connection.fetch("SELECT dedupe_key FROM events")]
        ids = [r[0] for r in await connection.fetch("SELECT id FROM message_queue")]
        chosen = random.Random(seed).sample(ids, min(sample, len(ids))) if sample else ids
        rows = await connection.fetch("SELECT * FROM message_queue WHERE id = any($1::uuid[])", chosen)
        payloads = await connection.fetch("SELECT payload FROM events WHERE message_uuid = any($1::uuid[])", chosen)
        counted = await connection.fetchval(ROLLUP_TOTAL)
    finally:
        await connection.close()
    mirror = {str(r["id"]): mirror_row(dict(r.items())) for r in rows}
    duplicates = len(keys) - len(set(keys))
    return Stored(set(keys), duplicates, mirror, [r[0] for r in payloads], len(keys), int(counted or 0))


def stored_sqlite(path: Path, sample: int, seed: int) -> Stored:
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        keys = [bytes(r[0]) for r in connection.execute("SELECT dedupe_key FROM events")]
        rows = {r["id"]: r for r in connection.execute(MIRROR_QUERY)}
        chosen = set(random.Random(seed).sample(sorted(rows), min(sample, len(rows))) if sample else rows)
        payloads = [r[1] for r in connection.execute("SELECT message_uuid, payload FROM events") if r[0] in chosen]
        counted = connection.execute(ROLLUP_TOTAL).fetchone()[0]
    finally:
        connection.close()
    mirror = {str(i): mirror_row(dict(zip(rows[i].keys(), rows[i], strict=True))) for i in chosen}
    duplicates = len(keys) - len(set(keys))
    return Stored(set(keys), duplicates, mirror, payloads, len(keys), int(counted or 0))


async def rederive_mirror(database_url: str, payloads: list[str]) -> None:
    """Write the mirror as the stored events make it when each is applied exactly once, in a fresh database."""
    services = await Services.start(Settings(database_url=database_url))
    try:
        for start in range(0, len(payloads), 2000):
            body = ("[" + ",".join(payloads[start : start + 2000]) + "]").encode()
            records, dead, _ = decode_body(body, source=KUMOMTA, api_key=None, tenant=None)
            async with services.sessions.begin() as session:
                await write_group(session, records, dead)
        await services.projections.catch_up()
    finally:
        await services.close()


async def run(args: argparse.Namespace, folder: Path, cleanup: list[Any]) -> int:
    pg: PrivatePostgres | None = None
    if args.backend == "postgres":
        pg = PrivatePostgres(folder, free_port())
        cleanup.append(pg.kill)
        log(f"initdb and start a private Postgres on 127.0.0.1:{pg.port} in {folder}")
        pg.init()
        pg.start()
        admin = await asyncpg.connect(pg.dsn())
        await admin.execute("CREATE DATABASE mtactl")
        await admin.execute("CREATE DATABASE verify")
        await admin.close()
        database_url = pg.dsn("mtactl").replace("postgresql://", "postgresql+asyncpg://")
    else:
        database_url = f"sqlite+aiosqlite:///{folder}/mtactl.db"
    services = await Services.start(Settings(database_url=database_url, spool_dir=str(folder / "spool")))
    key = (await services.keys.create(name="faults", scopes=["events:ingest"])).key
    await services.close()

    service = Service(folder, database_url)
    cleanup.append(service.kill)
    await service.start()
    load = Load(service.base, key, args.rate, args.batch, args.seed)
    clients = [asyncio.create_task(load.client()) for _ in range(args.clients)]
    replays: list[tuple[str, float | None]] = []
    started = time.monotonic()
    log(f"{args.clients} clients posting {args.rate:.0f} records/s in batches of {args.batch}")
    try:
        await kills(args, service)
        if pg is not None:
            await faults_on_postgres(args, pg, service, replays)
        await asyncio.sleep(args.settle)
    finally:
        load.stopping = True
        log("faults done: letting every client's last batch be acknowledged")
        done, pending = await asyncio.wait(clients, timeout=120)
        for task in pending:
            task.cancel()
        for task in done:
            if (error := task.exception()) is not None:
                raise error
    drained = await wait_for_replay(service, time.monotonic(), 60)
    projected = await wait_for_projections(service, 120)
    service.note_rss()
    service.kill(signal.SIGTERM)
    elapsed = time.monotonic() - started

    log(f"checking: events, and the mirror of {args.mirror_sample or 'every'} messages against a clean replay")
    if pg is not None:
        stored = await stored_postgres(pg.dsn("mtactl"), args.mirror_sample, args.seed)
        verify_url = pg.dsn("verify").replace("postgresql://", "postgresql+asyncpg://")
    else:
        stored = stored_sqlite(folder / "mtactl.db", args.mirror_sample, args.seed)
        verify_url = f"sqlite+aiosqlite:///{folder}/verify.db"
    await rederive_mirror(verify_url, stored.payloads)
    if pg is not None:
        expected = (await stored_postgres(pg.dsn("verify"), 0, args.seed)).mirror
    else:
        expected = stored_sqlite(folder / "verify.db", 0, args.seed).mirror
    mirror_differences = sum(
        1 for i in stored.mirror.keys() | expected.keys() if stored.mirror.get(i) != expected.get(i)
    )
    duplicate_rows = stored.duplicate_rows
    miscounted = stored.counted - stored.events  # > 0: an event counted twice; < 0: one never counted
    lost = len(load.acknowledged - stored.keys)
    slowest = max((took for _, took in replays if took is not None), default=0.0)
    unfinished = any(took is None for _, took in replays)

    print()
    print(f"backend          : {args.backend}, {elapsed:.0f} s under load, {service.starts} service starts")
    print(f"records sent     : {load.sent:,} ({load.posts:,} posts)")
    print(f"acknowledged     : {len(load.acknowledged):,}")
    print(f"stored           : {len(stored.keys):,} distinct keys in events")
    print(
        f"duplicated       : {duplicate_rows} event rows, {mirror_differences} mirror rows unlike a clean replay, "
        f"rollups off by {miscounted} events ({stored.counted:,} counted of {stored.events:,})"
    )
    print(f"lost             : {lost}")
    print(f"5xx              : {load.status_5xx}   (4xx {load.status_4xx}, no answer {load.network_errors})")
    print(f"longest request  : {load.longest_request:.1f} s")
    for line, _ in replays:
        print(f"replay           : {line}")
    if drained is None:
        print(f"spool            : NOT drained at the end ({service.spooled()} files)")
    if projected is None:
        print("projections      : NOT caught up with the log within 120 s of the end")
    else:
        print(f"projections      : caught up {projected:.1f} s after the load ended")
    print(f"peak RSS         : {service.peak_rss_mb:.0f} MB (largest of the service's processes)")
    failed = lost or duplicate_rows or mirror_differences or miscounted or load.status_5xx or drained is None
    failed = failed or projected is None
    verdict = "met" if not failed and not unfinished and slowest < 15 else "NOT met"
    replay_note = f"slowest {slowest:.1f} s" if replays else "no database stops on this backend"
    print(f"targets          : {verdict} (0 lost, 0 duplicated, 0 5xx, every replay < 15 s: {replay_note})")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rate", type=float, default=2000, help="records/s posted by all clients together")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=200, help="records per batch")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the service")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of Postgres stops (fast, immediate, restart)")
    parser.add_argument(
        "--stops",
        type=lambda text: [mode for mode in text.split(",") if mode],
        default=["fast", "immediate", "restart"],
        help="Postgres stops per round, in order: fast, immediate, restart (fast, with the service restarted)",
    )
    parser.add_argument("--outage", type=float, default=10, help="seconds Postgres stays stopped")
    parser.add_argument("--settle", type=float, default=6, help="seconds of plain load between faults")
    parser.add_argument("--replay-limit", type=float, default=60, help="seconds a replay may take before it fails")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--mirror-sample", type=int, default=5000, help="messages whose mirror row is re-derived (0: every one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mtactl-faults-"))
    cleanup: list[Any] = []

    def stop(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    status = 1
    try:
        status = asyncio.run(run(args, folder, cleanup))
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
    finally:
        for undo in reversed(cleanup):
            with contextlib.suppress(Exception):
                undo()
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
