#!/usr/bin/env python3
"""Benchmark KumoMTA log ingestion end to end against a raw COPY of the same rows, in one run.

    .venv/bin/python bench/ingest.py                      # 1M records, 8 concurrent clients, batches of 1000
    .venv/bin/python bench/ingest.py --records 200000     # quicker
    .venv/bin/python bench/ingest.py --order time         # records in event time order, as kumod logs them

1. Creates a fresh Postgres database, starts `mtactl serve` on it (a subprocess), and posts pre-built batches of
   realistic records (Reception, TransientFailure, Delivery/Bounce, a few Expiration/OOB; ~2.2 per message) from
   concurrent clients, by default with each message's records side by side (see ``--order``). Every request must
   come back 202 with everything accepted.
2. Truncates ``events`` and times an asyncpg COPY of exactly the event rows the service wrote.
3. Prints records/s for both, their ratio, request latency p50/p99 and the service's peak RSS (VmHWM).

Targets (issue #3, 2 cores): >= 30,000 records/s sustained, >= 50 % of raw COPY, RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.kumomta.log_source import KUMOMTA
from controlplane.db.events import EVENT_COLUMNS
from controlplane.events.service import decode_body, event_row
from controlplane.services import Services
from controlplane.settings import Settings

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "web.de"] + [
    f"d{n}.example" for n in range(200)
]


def message_records(rng: random.Random, n: int) -> list[dict[str, Any]]:
    domain = rng.choice(DOMAINS)
    tenant = f"tenant-{rng.randrange(50)}"
    campaign = f"camp-{rng.randrange(300)}"
    created = START + timedelta(seconds=rng.randrange(3600), microseconds=rng.randrange(1_000_000))
    base = {
        "id": f"{n:032x}",
        "sender": f"bounces@{tenant}.example",
        "recipient": f"user{n}@{domain}",
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


def build_batches(total: int, batch_size: int, seed: int, order: str = "message") -> list[bytes]:
    """Batches of ``total`` records. ``order="message"``: each message's records side by side, so a message's
    whole life usually lands in one batch (the mirror row is written once). ``order="time"``: all records in event
    time order, as kumod logs them; a message's later records then arrive batches after its Reception, and its
    mirror row is written once per batch it appears in."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    n = 0
    while len(records) < total:
        records.extend(message_records(rng, n))
        n += 1
    records = records[:total]
    if order == "time":
        records.sort(key=lambda record: record["event_time"])
    encoded = [json.dumps(record).encode() for record in records]
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
    found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


SERVER_SETTINGS = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "wal_compression", "synchronous_commit")


async def server_counters(dsn: str) -> dict[str, Any]:
    """WAL position and checkpoint count: what the run cost the server beyond its CPU."""
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal, checkpoints_timed + checkpoints_req AS checkpoints "
            "FROM pg_stat_bgwriter"
        )
        settings = await connection.fetch(
            "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = any($1::text[])",
            list(SERVER_SETTINGS),
        )
    finally:
        await connection.close()
    return {"wal": int(row["wal"]), "checkpoints": int(row["checkpoints"])} | {s["name"]: s["value"] for s in settings}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def post_all(port: int, key: str, batches: list[bytes], clients: int) -> tuple[float, list[float], int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    latencies: list[float] = []
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=120,
        ) as http:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await http.post("/api/v1/events/ingest/kumomta", content=body)
                latencies.append(time.perf_counter() - started)
                result = response.json()
                if response.status_code != 202 or result["rejected"] or result["spooled"]:
                    raise RuntimeError(f"unexpected answer {response.status_code}: {response.text[:300]}")
                accepted += result["accepted"]

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies, accepted


async def run(args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(f"{args.postgres}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{args.database}"')
    await admin.close()
    dsn = f"{args.postgres}/{args.database}"
    settings = Settings(database_url=dsn.replace("postgresql://", "postgresql+asyncpg://"))
    services = await Services.start(settings)
    key = (await services.keys.create(name="bench", scopes=["events:ingest"])).key
    await services.close()

    print(f"building {args.records:,} records ...", flush=True)
    batches = build_batches(args.records, args.batch, args.seed, args.order)

    port = free_port()
    env = {
        **os.environ,
        "MTACTL_DATABASE_URL": settings.database_url,
        "MTACTL_LOG_LEVEL": "WARNING",
        "MTACTL_SPOOL_DIR": f"/tmp/{args.database}-spool",
    }
    env.pop("MTACTL_REDIS_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port)], env=env)
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(100):
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/api/v1/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
        server_before = await server_counters(dsn)
        service_before, pg_before = cpu_seconds([server.pid]), cpu_seconds(postgres_pids())
        own_cpu = time.process_time()
        elapsed, latencies, accepted = await post_all(port, key, batches, args.clients)
        own_cpu = time.process_time() - own_cpu
        service_cpu = cpu_used(service_before, cpu_seconds([server.pid]))
        pg_cpu = cpu_used(pg_before, cpu_seconds(postgres_pids()))
        rss = peak_rss_mb(server.pid)
        server_after = await server_counters(dsn)
    finally:
        server.terminate()
        server.wait(30)

    connection = await asyncpg.connect(dsn)
    stored = await connection.fetchval("SELECT count(*) FROM events")
    mirrored = await connection.fetchval("SELECT count(*) FROM message_queue")
    # The raw baseline: exactly the event rows the service wrote, COPYed into the same (now empty) table.
    received = datetime.now(UTC)
    rows = []
    for batch in batches:
        records, _, _ = decode_body(batch, source=KUMOMTA, api_key="bench", tenant=None)
        rows.extend(event_row(record, received) for record in records)
    await connection.execute("TRUNCATE events")
    copy_started = time.perf_counter()
    await connection.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
    copy_elapsed = time.perf_counter() - copy_started
    await connection.close()

    end_to_end = accepted / elapsed
    raw = len(rows) / copy_elapsed
    latencies.sort()
    print(
        f"\n{args.records:,} records in {len(batches):,} batches of {args.batch}, {args.clients} clients, "
        f"{args.order} order"
    )
    print(f"stored events: {stored:,}   mirrored messages: {mirrored:,}")
    print(f"end to end : {end_to_end:>10,.0f} records/s  ({elapsed:.1f} s)")
    print(f"raw COPY   : {raw:>10,.0f} records/s  ({copy_elapsed:.1f} s, events table only)")
    print(f"ratio      : {100 * end_to_end / raw:>10.1f} %")
    print(
        f"latency    : p50 {1000 * statistics.median(latencies):.0f} ms, "
        f"p99 {1000 * latencies[int(0.99 * (len(latencies) - 1))]:.0f} ms per request"
    )
    print(f"service RSS: {rss:.0f} MB peak")
    per_record = 1e6 / accepted
    print(
        f"CPU/record : service {service_cpu * per_record:.1f} µs, Postgres {pg_cpu * per_record:.1f} µs, "
        f"load generator {own_cpu * per_record:.1f} µs  ({os.cpu_count()} cores)"
    )
    wal_per_record = (server_after["wal"] - server_before["wal"]) / accepted
    print(
        f"Postgres   : {wal_per_record / 1024:.1f} KB of WAL per record, "
        f"{server_after['checkpoints'] - server_before['checkpoints']} checkpoints during the run; "
        + ", ".join(f"{name}={server_after[name]}" for name in SERVER_SETTINGS)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mtactl_bench_ingest")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--order",
        choices=["message", "time"],
        default="message",
        help="records of a message side by side (default), or all in event time order as kumod logs them",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
