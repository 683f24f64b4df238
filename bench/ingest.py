#!/usr/bin/env python3
"""Benchmark KumoMTA log ingestion on the event-sourced pipeline, against a raw COPY of the same rows, in one run.

    .venv/bin/python bench/ingest.py                          # 1M records; batches of 1, 100 and 1000; 8 clients
    .venv/bin/python bench/ingest.py --records 300000         # quicker
    .venv/bin/python bench/ingest.py --batches 1000 --workers 1 --order message
    .venv/bin/python bench/ingest.py --batches 1000 --projections-paused   # the acknowledgement alone, then
                                                                           # the projections alone

The acknowledgement (202) waits only for the append to ``events``; the message mirror (``message_queue`` and the
``message_counts`` its triggers keep) and the per-minute ``event_rollups`` are projections that follow the log in
the background of `mtactl serve`. So there are two rates: what is acknowledged, and what is sustained with the
projections keeping up. Each batch size is one phase, and every phase runs:

1. A fresh Postgres database (dropped and created) and a fresh `mtactl serve [--workers N]` on it (a subprocess:
   the uvicorn parent and its worker processes) and, with ``--redis`` (the default: the production layout), one
   `mtactl worker`, which runs the projections; ``--redis ''`` runs them inside the one service process instead.
2. Posting: realistic records (Reception, TransientFailure, Delivery/Bounce, a few Expiration; ~2.2 per message;
   varied recipients), by default in event time order as kumod logs them (``--order``), from ``--clients``
   concurrent clients. A batch of 1 is posted as a single object (what ``log_hooks:new_json`` posts), larger ones
   as arrays (a ``send_batch`` hook). Every answer must be 202 with everything accepted. Batches of 1 are request
   bound, so that phase posts ``--records-small`` records.
3. The projections, polled every ``--poll`` seconds during and after posting: each one's checkpoint (``applied``)
   and the arrival time of the first event after it (one index probe; the service's own status counts the backlog,
   which is too costly to poll). Events behind = records acknowledged so far - applied; lag = how long the oldest
   event not applied has waited. The phase ends when both have applied every record.
4. Checks: ``count(events)`` = records acknowledged, ``count(message_queue)`` = distinct messages sent, the rollups'
   total (dimension ``all``, record-type metrics) = ``count(events)``, and /api/v1/health/detailed shows nothing
   behind. Then the service is stopped.
5. The raw baseline: exactly the event rows the service wrote are read back (in log order), ``events`` is
   truncated, and one asyncpg COPY writes them back into it (same partitions, key and indexes; ``tx`` filled by its
   default), with nothing else running.

Printed per phase: acknowledged records/s (and the ratio to raw COPY), request latency p50/p99, the projections' lag
(max during posting and overall, at the end of posting), the time they took to catch up after posting, the sustained
rate (records / time from the first post until both caught up) and its ratio to raw COPY; CPU per record of the
service processes, of Postgres (the backends of the bench database and the server's background processes) and of the
load generator, split into posting (which includes the projections' passes meanwhile) and catch-up; the service's
peak RSS (VmHWM: largest process and the sum); WAL written and checkpoints. Then a side-by-side table of the phases
against issue 10's targets (2 cores shared by service, Postgres and load generator).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.db.events import EVENT_COLUMNS
from controlplane.services import Services
from controlplane.settings import Settings

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "web.de"] + [
    f"d{n}.example" for n in range(200)
]
# fmt: off
FIRST = [
    "anna", "ben", "carla", "david", "emma", "felix", "greta", "hannah", "ivan", "julia", "karl", "laura", "max",
    "nina", "oliver", "paula", "quentin", "rosa", "sam", "tina", "ugo", "vera", "william", "xenia", "yusuf", "zoe",
    "li", "mohammed", "sofia", "lucas", "mia", "noah", "amelie", "jan", "lea", "tom"
]
LAST = [
    "smith", "mueller", "garcia", "rossi", "novak", "kowalski", "dubois", "jensen", "schmidt", "brown", "martin",
    "lopez", "nguyen", "kim", "tanaka", "silva", "berg", "fischer", "weber", "meyer", "wagner", "becker",
    "hoffmann", "schulz", "koch", "richter", "klein", "wolf", "neumann", "braun"
]
# fmt: on
PROJECTIONS = ("mirror", "rollups")

# Targets of issue 10, as fractions of the raw COPY of the same phase.
TARGET_ACK_1000 = 0.6
TARGET_ACK_100 = 0.4
TARGET_SUSTAINED = 0.35
TARGET_LAG_SECONDS = 5.0
TARGET_RSS_MB = 300


def local_part(rng: random.Random) -> str:
    """A recipient's local part as people have them: name forms, digits, tags, the odd role address."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    form = rng.randrange(8)
    if form == 0:
        return f"{first}.{last}"
    if form == 1:
        return f"{first[0]}{last}"
    if form == 2:
        return f"{first}{last}{rng.randrange(100)}"
    if form == 3:
        return f"{first}_{last}{rng.randrange(1960, 2010)}"
    if form == 4:
        return f"{last}.{first[0]}"
    if form == 5:
        return f"{first}+{rng.choice(['news', 'shop', 'promo', 'mail'])}"
    if form == 6:
        return f"{first}{rng.randrange(10_000)}"
    return rng.choice(["info", "contact", "office", "sales", "hello"]) + (str(rng.randrange(10)) * rng.randrange(2))


def message_records(rng: random.Random, n: int) -> list[dict[str, Any]]:
    domain = rng.choice(DOMAINS)
    tenant = f"tenant-{rng.randrange(50)}"
    campaign = f"camp-{rng.randrange(300)}"
    created = START + timedelta(seconds=rng.randrange(3600), microseconds=rng.randrange(1_000_000))
    base = {
        "id": f"{n:032x}",
        "sender": f"bounces@{tenant}.example",
        "recipient": f"{local_part(rng)}@{domain}",
        "queue": f"{campaign}:{tenant}@{domain}",
        "size": rng.randrange(2_000, 80_000),
        "created": int(created.timestamp()),
        "created_time": created.isoformat().replace("+00:00", "Z"),
        "meta": {"tenant": tenant, "campaign": campaign},
        "headers": {"Subject": f"Offer {n % 1000}"},
        "nodeid": "5f3c1a2e-8b7d-4c1e-9a0f-3d2b1c4e5f60",
        "reception_protocol": "ESMTP",
    }
    steps = [("Reception", 250, "OK", "Uncategorized")]
    steps += [("TransientFailure", 421, "4.7.0 try again later", "TransientFailure")] * (rng.random() < 0.2)
    roll = rng.random()
    if roll < 0.9:
        steps.append(("Delivery", 250, "OK queued", "Uncategorized"))
    elif roll < 0.97:
        steps.append(("Bounce", 550, "5.1.1 no such user", "InvalidRecipient"))
    else:
        steps.append(("Expiration", 551, "5.4.7 expired", "MessageExpired"))
    records = []
    for attempt, (kind, code, text, classification) in enumerate(steps):
        at = created + timedelta(seconds=attempt * 30 + 1)
        records.append(
            base
            | {
                "type": kind,
                "site": "" if kind == "Reception" else f"mx.{domain}",
                "response": {"code": code, "content": text, "command": ".", "enhanced_code": None},
                "timestamp": int(at.timestamp()),
                "event_time": at.isoformat().replace("+00:00", "Z"),
                "num_attempts": attempt,
                "bounce_classification": classification,
                "egress_pool": None if kind == "Reception" else "pool-a",
                "delivery_protocol": None if kind == "Reception" else "ESMTP",
            }
        )
    return records


def encoded_records(total: int, seed: int, order: str) -> tuple[list[bytes], int]:
    """``total`` records, each JSON-encoded, and how many distinct messages they belong to. ``order="message"``:
    each message's records side by side; ``order="time"``: all in event time order, as kumod logs them."""
    rng = random.Random(seed)
    records: list[tuple[datetime, bytes, int]] = []
    n = 0
    while len(records) < total:
        # Encoded right away: 1M records as dicts would take gigabytes.
        records.extend(
            (datetime.fromisoformat(r["event_time"]), json.dumps(r).encode(), n) for r in message_records(rng, n)
        )
        n += 1
    records = records[:total]
    if order == "time":
        records.sort(key=lambda record: record[0])
    return [record[1] for record in records], len({record[2] for record in records})


def build_batches(total: int, batch_size: int, seed: int, order: str = "message") -> list[bytes]:
    """Bodies of ``batch_size`` records (JSON arrays) out of ``total`` records (see ``encoded_records``). In time
    order a message's later records arrive batches after its Reception."""
    encoded, _ = encoded_records(total, seed, order)
    return [b"[" + b",".join(encoded[i : i + batch_size]) + b"]" for i in range(0, total, batch_size)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each of these processes that is still running (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    # A process started in between (a new backend) counts from zero; one that ended in between is not counted.
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def postgres_pids() -> list[int]:
    """Every postgres process on this machine (whatever database it serves)."""
    found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


async def database_pids(connection: asyncpg.Connection) -> list[int]:
    """The backends of this connection's database and the server's background processes (checkpointer, WAL
    writer, ...): the server is shared with other work, whose backends must not count."""
    rows = await connection.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR datname IS NULL"
    )
    return [int(row["pid"]) for row in rows]


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn's parent and its worker processes), from /proc."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending.extend(int(child) for child in (task / "children").read_text().split())
    return found


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


SERVER_SETTINGS = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "wal_compression", "synchronous_commit")


async def server_counters(connection: asyncpg.Connection) -> dict[str, Any]:
    """WAL position and checkpoint count: what the run cost the server beyond its CPU."""
    row = await connection.fetchrow(
        "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal, checkpoints_timed + checkpoints_req AS checkpoints "
        "FROM pg_stat_bgwriter"
    )
    settings = await connection.fetch(
        "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = any($1::text[])",
        list(SERVER_SETTINGS),
    )
    return {"wal": int(row["wal"]), "checkpoints": int(row["checkpoints"])} | {s["name"]: s["value"] for s in settings}


# Per projection: events applied, and how long the first event after its checkpoint has waited (NULL: none). A
# projection that has not run yet has no checkpoint row: it is at the start of the log.
PROJECTION_POLL = """
SELECT p.name, coalesce(c.applied, 0) AS applied,
       extract(epoch FROM clock_timestamp() - (
           SELECT e.received_at FROM events e
           WHERE (e.tx, e.event_at, e.dedupe_key)
                 > (coalesce(c.tx, 0), coalesce(c.event_at, '-infinity'), coalesce(c.dedupe_key, ''::bytea))
           ORDER BY e.tx, e.event_at, e.dedupe_key LIMIT 1
       ))::float8 AS lag
FROM unnest($1::text[]) AS p(name) LEFT JOIN projection_checkpoints c USING (name)
"""


@dataclass
class Lag:
    seconds: float = 0.0
    behind: int = 0

    def worst(self, other: Lag) -> Lag:
        return Lag(max(self.seconds, other.seconds), max(self.behind, other.behind))


@dataclass
class Phase:
    batch: int
    records: int
    messages: int
    requests: int = 0
    ack_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    lag_posting: Lag = field(default_factory=Lag)  # worst while posting
    lag_overall: Lag = field(default_factory=Lag)
    lag_end: Lag = field(default_factory=Lag)  # right when the last answer came back
    catch_up_seconds: float | None = None  # None: not caught up within --catch-up-timeout
    copy_seconds: float = 0.0
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # (posting, catch-up) seconds
    rss: list[float] = field(default_factory=list)  # VmHWM of each service process, MB
    wal: int = 0
    checkpoints: int = 0
    settings: dict[str, str] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)  # failed checks

    @property
    def acknowledged(self) -> float:
        return self.records / self.ack_seconds

    @property
    def raw(self) -> float:
        return self.records / self.copy_seconds

    @property
    def sustained(self) -> float | None:
        return None if self.catch_up_seconds is None else self.records / (self.ack_seconds + self.catch_up_seconds)


class Progress:
    """Records acknowledged so far, shared by the clients and the projection poller."""

    def __init__(self) -> None:
        self.acknowledged = 0
        self.done = False


async def post_all(
    port: int, key: str, bodies: list[tuple[bytes, int]], clients: int, progress: Progress
) -> list[float]:
    queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=120,
        ) as http:
            while not queue.empty():
                body, sent = queue.get_nowait()
                started = time.perf_counter()
                response = await http.post("/api/v1/events/ingest/kumomta", content=body)
                latencies.append(time.perf_counter() - started)
                result = response.json()
                if response.status_code != 202 or result["rejected"] or result["spooled"] or result["accepted"] != sent:
                    raise RuntimeError(f"unexpected answer {response.status_code}: {response.text[:300]}")
                progress.acknowledged += result["accepted"]

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def poll_projections(connection: asyncpg.Connection, progress: Progress) -> tuple[Lag, bool]:
    """The worst lag over the projections now, and whether all of them have applied everything acknowledged."""
    rows = await connection.fetch(PROJECTION_POLL, list(PROJECTIONS))
    acknowledged = progress.acknowledged
    lag = Lag()
    for row in rows:
        # Answers arrive a little after their commit, so a projection can be ahead of the count acknowledged.
        lag = lag.worst(Lag(row["lag"] or 0.0, max(0, acknowledged - int(row["applied"]))))
    return lag, all(int(row["applied"]) >= acknowledged for row in rows)


class Samples:
    """CPU seconds of the service processes, Postgres and this process, taken at the phase's milestones."""

    def __init__(self, roots: list[int], connection: asyncpg.Connection) -> None:
        self._roots, self._connection = roots, connection
        self.taken: list[dict[str, dict[int, float]]] = []

    async def take(self) -> None:
        self.taken.append(
            {
                "service": cpu_seconds([pid for root in self._roots for pid in process_tree(root)]),
                "postgres": cpu_seconds(await database_pids(self._connection)),
                "load generator": {0: time.process_time()},
            }
        )

    def used(self, who: str, start: int, end: int) -> float:
        return cpu_used(self.taken[start][who], self.taken[end][who])


def service_env(args: argparse.Namespace, database_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MTACTL_DATABASE_URL": database_url,
        "MTACTL_LOG_LEVEL": "WARNING",
        "MTACTL_SPOOL_DIR": f"/tmp/{args.database}-spool",
    }
    env.pop("MTACTL_REDIS_URL", None)  # without --redis the projections run embedded in the service
    if args.redis:
        env["MTACTL_REDIS_URL"] = args.redis
    return env


def start_worker(args: argparse.Namespace, database_url: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "controlplane.cli", "worker"]
    if args.worker_nice:  # nice execs the worker: same pid
        command = ["nice", "-n", str(args.worker_nice), *command]
    return subprocess.Popen(command, env=service_env(args, database_url))


async def start_service(
    args: argparse.Namespace, database_url: str, port: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes] | None]:
    """``mtactl serve`` and, with ``--redis``, one ``mtactl worker`` (which then runs the projections; with
    ``--projections-paused`` it is started once posting is over)."""
    env = service_env(args, database_url)
    command = [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    server = subprocess.Popen(command, env=env)
    worker = start_worker(args, database_url) if args.redis and not args.projections_paused else None
    async with httpx.AsyncClient() as probe:
        for _ in range(150):
            with contextlib.suppress(httpx.TransportError):
                if (await probe.get(f"http://127.0.0.1:{port}/api/v1/health")).status_code == 200:
                    break
            await asyncio.sleep(0.2)
        else:
            server.terminate()
            raise RuntimeError("the service did not answer within 30 s")
    # One worker answering does not mean all of them have finished starting: wait until the processes are idle,
    # so start-up CPU is not counted as ingestion.
    roots = [server.pid] + ([worker.pid] if worker else [])
    previous = sum(cpu_seconds([p for root in roots for p in process_tree(root)]).values())
    for _ in range(40):
        await asyncio.sleep(0.5)
        now = sum(cpu_seconds([p for root in roots for p in process_tree(root)]).values())
        if now - previous < 0.05:
            break
        previous = now
    return server, worker


async def fresh_database(args: argparse.Namespace) -> tuple[str, str]:
    """Drop and create the bench database, migrate it, and make an ingest key: (dsn, key)."""
    admin = await asyncpg.connect(f"{args.postgres}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{args.database}"')
    await admin.close()
    dsn = f"{args.postgres}/{args.database}"
    services = await Services.start(Settings(database_url=dsn.replace("postgresql://", "postgresql+asyncpg://")))
    key = (await services.keys.create(name="bench", scopes=["events:ingest"])).key
    await services.close()
    return dsn, key


async def run_phase(args: argparse.Namespace, batch: int, encoded: list[bytes], messages: int) -> Phase:
    phase = Phase(batch=batch, records=len(encoded), messages=messages)
    if batch == 1:
        bodies = [(record, 1) for record in encoded]  # one record alone, as log_hooks:new_json posts it
    else:
        bodies = [
            (b"[" + b",".join(encoded[i : i + batch]) + b"]", len(encoded[i : i + batch]))
            for i in range(0, len(encoded), batch)
        ]
    phase.requests = len(bodies)
    dsn, key = await fresh_database(args)
    port = free_port()
    server, worker = await start_service(args, dsn.replace("postgresql://", "postgresql+asyncpg://"), port)
    roots = [server.pid] + ([worker.pid] if worker else [])
    connection = await asyncpg.connect(dsn)
    try:
        before = await server_counters(connection)
        samples = Samples(roots, connection)
        progress = Progress()
        await samples.take()
        started = time.perf_counter()
        posting = asyncio.create_task(post_all(port, key, bodies, args.clients, progress))
        while not posting.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(posting), args.poll)
            if not posting.done():
                lag, _ = await poll_projections(connection, progress)
                phase.lag_posting = phase.lag_posting.worst(lag)
        phase.latencies = await posting  # raises what a client raised
        phase.ack_seconds = time.perf_counter() - started
        await samples.take()
        if args.projections_paused:  # the projections start now, and catch up with nothing else running
            worker = start_worker(args, dsn.replace("postgresql://", "postgresql+asyncpg://"))
            roots.append(worker.pid)
        phase.lag_end, caught_up = await poll_projections(connection, progress)
        phase.lag_overall = phase.lag_posting.worst(phase.lag_end)
        while not caught_up and time.perf_counter() - started - phase.ack_seconds < args.catch_up_timeout:
            await asyncio.sleep(args.poll)
            lag, caught_up = await poll_projections(connection, progress)
            phase.lag_overall = phase.lag_overall.worst(lag)
        if caught_up:
            phase.catch_up_seconds = time.perf_counter() - started - phase.ack_seconds
        await samples.take()
        for who in ("service", "postgres", "load generator"):
            phase.cpu[who] = (samples.used(who, 0, 1), samples.used(who, 1, 2))
        after = await server_counters(connection)
        phase.wal, phase.checkpoints = after["wal"] - before["wal"], after["checkpoints"] - before["checkpoints"]
        phase.settings = {name: after[name] for name in SERVER_SETTINGS}
        tree = [pid for root in roots for pid in process_tree(root)]
        phase.rss = [peak_rss_mb(pid) for pid in tree]
        async with httpx.AsyncClient() as http:
            detailed = (await http.get(f"http://127.0.0.1:{port}/api/v1/health/detailed")).json()
        for projection in detailed.get("projections", []):
            if caught_up and projection["events_behind"]:
                phase.checks.append(f"health/detailed: {projection['name']} {projection['events_behind']} behind")
    finally:
        for process in (server, worker):
            if process is not None:
                process.terminate()
                process.wait(30)

    try:
        stored = await connection.fetchval("SELECT count(*) FROM events")
        mirrored = await connection.fetchval("SELECT count(*) FROM message_queue")
        rolled = await connection.fetchval(
            "SELECT coalesce(sum(events), 0) FROM event_rollups WHERE dimension = 'all' "
            "AND metric NOT LIKE 'delivery_le_%'"
        )
        if stored != phase.records:
            phase.checks.append(f"count(events) {stored:,} != {phase.records:,} records acknowledged")
        if mirrored != messages:
            phase.checks.append(f"count(message_queue) {mirrored:,} != {messages:,} messages sent")
        if rolled != stored:
            phase.checks.append(f"rollup total {rolled:,} != count(events) {stored:,}")
        # The raw baseline: exactly the rows the service wrote, in log order, COPYed back into the emptied table.
        columns = ", ".join(EVENT_COLUMNS)
        rows = [
            tuple(row)
            for row in await connection.fetch(f"SELECT {columns} FROM events ORDER BY tx, event_at, dedupe_key")
        ]
        await connection.execute("TRUNCATE events")
        copy_started = time.perf_counter()
        await connection.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
        phase.copy_seconds = time.perf_counter() - copy_started
    finally:
        await connection.close()
    return phase


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms"


def report(phase: Phase, args: argparse.Namespace) -> None:
    latencies = sorted(phase.latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"\n== batches of {phase.batch}: {phase.records:,} records ({phase.messages:,} messages) in "
        f"{phase.requests:,} requests, {args.clients} clients, {args.order} order"
    )
    print(
        f"acknowledged: {phase.acknowledged:>9,.0f} records/s  ({phase.ack_seconds:.1f} s)   "
        f"= {phase.acknowledged / phase.raw:.2f} x raw COPY"
    )
    print(f"raw COPY    : {phase.raw:>9,.0f} records/s  ({phase.copy_seconds:.1f} s; events truncated, same rows back)")
    print(f"latency     : p50 {ms(statistics.median(latencies))}, p99 {ms(p99)} per request")
    if args.projections_paused:
        print("projections : paused while posting (--projections-paused): the lag below is the whole backlog")
    print(
        f"projections : max lag while posting {phase.lag_posting.seconds:.1f} s / {phase.lag_posting.behind:,} events"
        f"; at the end of posting {phase.lag_end.seconds:.1f} s / {phase.lag_end.behind:,} events"
        f"; max overall {phase.lag_overall.seconds:.1f} s"
    )
    if phase.catch_up_seconds is None or phase.sustained is None:
        print(f"sustained   : projections NOT caught up {args.catch_up_timeout:.0f} s after posting ended")
    else:
        print(
            f"sustained   : {phase.sustained:>9,.0f} records/s  (caught up {phase.catch_up_seconds:.1f} s after "
            f"posting, polled every {args.poll} s)   = {phase.sustained / phase.raw:.2f} x raw COPY"
        )
    parts = []
    for who, (posting, catch_up) in phase.cpu.items():
        parts.append(
            f"{who} {1e6 * (posting + catch_up) / phase.records:.0f} µs "
            f"({1e6 * posting / phase.records:.0f} posting + {1e6 * catch_up / phase.records:.0f} catch-up)"
        )
    print(f"CPU/record  : {'; '.join(parts)}  [{os.cpu_count()} cores]")
    print(
        f"service RSS : {max(phase.rss):.0f} MB peak in the largest of {len(phase.rss)} processes, "
        f"{sum(phase.rss):.0f} MB summed (parent first: {', '.join(f'{mb:.0f}' for mb in phase.rss)} MB)"
    )
    print(
        f"Postgres    : {phase.wal / phase.records / 1024:.1f} KB of WAL per record, {phase.checkpoints} checkpoints "
        "(posting and catch-up; the server's, shared)"
    )
    print("checks      : " + ("all passed" if not phase.checks else "FAILED: " + "; ".join(phase.checks)))


def summary(phases: list[Phase]) -> None:
    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print("\n== side by side (ratios are to the raw COPY of the same phase, same run)")
    print(
        f"{'batch':>6} {'records':>9} {'ack/s':>8} {'ack/raw':>8} {'sust/s':>8} {'sust/raw':>9} {'raw/s':>8} "
        f"{'lag max':>8} {'lag end':>8} {'catch-up':>9} {'p50':>7} {'p99':>7} {'RSS max':>8} {'RSS sum':>8}"
    )
    for p in phases:
        latencies = sorted(p.latencies)
        sustained = f"{p.sustained:8,.0f}" if p.sustained else f"{'-':>8}"
        ratio = f"{p.sustained / p.raw:9.2f}" if p.sustained else f"{'-':>9}"
        catch_up = f"{p.catch_up_seconds:8.1f}s" if p.catch_up_seconds is not None else f"{'never':>9}"
        print(
            f"{p.batch:>6} {p.records:>9,} {p.acknowledged:8,.0f} {p.acknowledged / p.raw:8.2f} {sustained} {ratio} "
            f"{p.raw:8,.0f} {p.lag_overall.seconds:7.1f}s {p.lag_end.seconds:7.1f}s {catch_up} "
            f"{ms(statistics.median(latencies)):>7} {ms(latencies[int(0.99 * (len(latencies) - 1))]):>7} "
            f"{max(p.rss):6.0f}MB {sum(p.rss):6.0f}MB"
        )
    print("\ntargets (issue 10; 2 cores shared by service, Postgres and load generator):")
    by_batch = {p.batch: p for p in phases}
    if 1000 in by_batch:
        p = by_batch[1000]
        print(
            f"  acknowledged at 1000/batch >= {TARGET_ACK_1000} x raw COPY : {p.acknowledged / p.raw:.2f}  "
            f"{mark(p.acknowledged / p.raw >= TARGET_ACK_1000)}"
        )
    if 100 in by_batch:
        p = by_batch[100]
        print(
            f"  acknowledged at 100/batch  >= {TARGET_ACK_100} x raw COPY : {p.acknowledged / p.raw:.2f}  "
            f"{mark(p.acknowledged / p.raw >= TARGET_ACK_100)}"
        )
    for p in phases:
        keeping_up = p.lag_overall.seconds < TARGET_LAG_SECONDS and p.lag_end.seconds < TARGET_LAG_SECONDS
        share = p.sustained / p.raw if p.sustained else 0.0
        print(
            f"  sustained at {p.batch}/batch >= {TARGET_SUSTAINED} x raw COPY with lag < {TARGET_LAG_SECONDS:.0f} s: "
            f"{share:.2f}, max lag {p.lag_overall.seconds:.1f} s, at end {p.lag_end.seconds:.1f} s  "
            f"{mark(share >= TARGET_SUSTAINED and keeping_up)}"
        )
    worst = max(max(p.rss) for p in phases)
    print(f"  service RSS < {TARGET_RSS_MB} MB per process : {worst:.0f} MB  {mark(worst < TARGET_RSS_MB)}")
    settings = phases[-1].settings
    print("Postgres settings: " + ", ".join(f"{name}={value}" for name, value in settings.items()))


async def run(args: argparse.Namespace) -> None:
    sizes = [int(size) for size in args.batches.split(",")]
    phases = []
    for batch in sizes:
        total = args.records_small if batch == 1 else args.records
        print(f"building {total:,} records for batches of {batch} ...", flush=True)
        encoded, messages = encoded_records(total, args.seed, args.order)
        phases.append(await run_phase(args, batch, encoded, messages))
        del encoded
        report(phases[-1], args)
    summary(phases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records per phase (batches > 1)")
    parser.add_argument("--records-small", type=int, default=20_000, help="records for the phase of batches of 1")
    parser.add_argument("--batches", default="1,100,1000", help="batch sizes, one phase each, comma-separated")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="mtactl serve --workers (default: serve's own)")
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/14",
        help="MTACTL_REDIS_URL: the production layout, serve (one process per core) + one `mtactl worker` running "
        "the projections; '' for the embedded default (one service process running them)",
    )
    parser.add_argument(
        "--projections-paused",
        action="store_true",
        help="start the worker (the projections) only once posting is over: the acknowledgement alone, then the "
        "projections alone catching up (production layout only)",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="run the worker (the projections) at this scheduling niceness: the acknowledgement gets the cores first",
    )
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls of the projections")
    parser.add_argument("--catch-up-timeout", type=float, default=600.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mtactl_bench_ingest")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--order",
        choices=["message", "time"],
        default="time",
        help="all records in event time order as kumod logs them (default), or each message's records side by side",
    )
    args = parser.parse_args()
    if args.projections_paused and not args.redis:
        parser.error("--projections-paused needs the production layout (--redis)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
