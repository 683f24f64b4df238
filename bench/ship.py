#!/usr/bin/env python3
"""Benchmark the KumoMTA log shipper: kumod-like segments -> `mtactl ship kumomta-logs --once` -> `mtactl serve`.

    .venv/bin/python bench/ship.py                                  # 1M records, embedded SQLite
    .venv/bin/python bench/ship.py --records 200000                 # quicker
    .venv/bin/python bench/ship.py --database-url postgresql://postgres@127.0.0.1:5432/mtactl_bench_ship

1. Writes the records (bench/ingest.py's realistic generator, in event time order as kumod logs them) as JSON
   lines into zstd segments of ``--segment`` records each, named and marked done as kumod does.
2. Starts `mtactl serve` on a fresh SQLite file (default) or on the Postgres database named (dropped and created).
3. Runs the shipper as its own process until it has shipped everything, then checks the events stored.
4. Prints records/s acknowledged (202) into mtactl, and the CPU per record of the shipper, the service and
   Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import cpu_seconds, cpu_used, free_port, message_records, peak_rss_mb, postgres_pids
from controlplane.services import Services
from controlplane.settings import Settings


def write_segments(directory: Path, total: int, per_segment: int, seed: int) -> tuple[int, int]:
    """Segments as kumod leaves them once finished; (uncompressed, compressed) bytes."""
    import random

    rng = random.Random(seed)
    records = []
    n = 0
    while len(records) < total:
        records.extend(message_records(rng, n))
        n += 1
    records = sorted(records[:total], key=lambda record: record["event_time"])
    raw = packed = 0
    compressor = zstandard.ZstdCompressor(level=3)  # kumod's default: zstd's own default level
    for index in range(0, total, per_segment):
        data = b"".join(json.dumps(record).encode() + b"\n" for record in records[index : index + per_segment])
        path = directory / f"20261123-{index // per_segment:06d}.000000000"
        path.write_bytes(compressor.compress(data))
        path.chmod(0o444)
        raw += len(data)
        packed += path.stat().st_size
    return raw, packed


async def prepare_database(url: str | None, folder: Path) -> Settings:
    if url is None:
        return Settings(database_url=f"sqlite+aiosqlite:///{folder}/mtactl.db", spool_dir=str(folder / "spool"))
    server, name = url.rsplit("/", 1)
    admin = await asyncpg.connect(f"{server}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return Settings(database_url=url.replace("postgresql://", "postgresql+asyncpg://"), spool_dir=str(folder / "spool"))


async def count_events(settings: Settings) -> int:
    services = await Services.start(settings)
    try:
        from sqlalchemy import func, select

        from controlplane.db.tables import EventRow

        async with services.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(EventRow)) or 0)
    finally:
        await services.close()


async def run(args: argparse.Namespace, folder: Path) -> None:
    logs = folder / "kumo-logs"
    logs.mkdir()
    print(f"writing {args.records:,} records into segments of {args.segment:,} ...", flush=True)
    raw, packed = write_segments(logs, args.records, args.segment, args.seed)
    segments = len(os.listdir(logs))
    print(f"  {segments} segments, {raw / 1e6:.0f} MB of JSON lines, {packed / 1e6:.1f} MB compressed", flush=True)

    settings = await prepare_database(args.database_url, folder)
    services = await Services.start(settings)
    key = (await services.keys.create(name="bench-ship", scopes=["events:ingest"])).key
    await services.close()

    port = free_port()
    env = {
        **os.environ,
        "MTACTL_DATABASE_URL": settings.database_url,
        "MTACTL_SPOOL_DIR": settings.spool_dir,
        "MTACTL_LOG_LEVEL": "WARNING",
    }
    env.pop("MTACTL_REDIS_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port)], env=env)
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(150):
                try:
                    if (await probe.get(f"http://127.0.0.1:{port}/api/v1/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
        postgres = args.database_url is not None
        service_before = cpu_seconds([server.pid])
        pg_before = cpu_seconds(postgres_pids()) if postgres else {}
        started = time.perf_counter()
        shipper = subprocess.Popen(
            [
                *(sys.executable, "-m", "controlplane.cli", "ship", "kumomta-logs", str(logs)),
                *("--url", f"http://127.0.0.1:{port}", "--once", "--batch", str(args.batch)),
            ],
            env={**env, "MTACTL_SHIP_KEY": key},
            stdout=subprocess.PIPE,
        )
        assert shipper.stdout is not None
        # The shipper's own peak, sampled while it runs: wait4's ru_maxrss would carry this (large) process's
        # high-water mark over the fork and exec. WNOHANG|WNOWAIT: never blocks, and leaves it to reap below.
        shipper_rss = 0.0
        while os.waitid(os.P_PID, shipper.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # noqa: ASYNC222
            with contextlib.suppress(OSError, ValueError):
                shipper_rss = max(shipper_rss, peak_rss_mb(shipper.pid))
            await asyncio.sleep(0.2)
        output = shipper.stdout.read()
        _, status, usage = os.wait4(shipper.pid, 0)  # noqa: ASYNC222 (it has exited: no wait)
        elapsed = time.perf_counter() - started
        service_cpu = cpu_used(service_before, cpu_seconds([server.pid]))
        pg_cpu = cpu_used(pg_before, cpu_seconds(postgres_pids())) if postgres else 0.0
    finally:
        server.terminate()
        server.wait(30)
    if status != 0:
        raise SystemExit(f"the shipper failed (status {status})")
    stats = json.loads(output)
    stored = await count_events(settings)
    shipper_cpu = usage.ru_utime + usage.ru_stime
    per_record = 1e6 / stats["records"]
    backend = "postgres" if args.database_url else "sqlite"
    print(f"\n{args.records:,} records, {segments} segments, batches of {args.batch}, {backend}")
    print(
        f"acknowledged: {stats['records']:,} (accepted {stats['accepted']:,}, duplicates {stats['duplicates']:,}, "
        f"rejected {stats['rejected']:,}, spooled {stats['spooled']:,}, retries {stats['retries']}); "
        f"events stored {stored:,}"
    )
    print(f"throughput  : {stats['records'] / elapsed:>10,.0f} records/s acknowledged into mtactl ({elapsed:.1f} s)")
    print(
        f"CPU/record  : shipper {shipper_cpu * per_record:.1f} µs, service {service_cpu * per_record:.1f} µs"
        + (f", Postgres {pg_cpu * per_record:.1f} µs" if postgres else "")
        + f"  ({os.cpu_count()} cores; shipper peak RSS {shipper_rss:.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--segment", type=int, default=100_000, help="records per segment file")
    parser.add_argument("--batch", type=int, default=5000, help="records per request (the shipper's --batch)")
    parser.add_argument("--database-url", default=None, help="postgresql://… (dropped and created); default SQLite")
    parser.add_argument("--seed", type=int, default=11)
    folder = Path(tempfile.mkdtemp(prefix="mtactl-bench-ship-"))
    try:
        asyncio.run(run(parser.parse_args(), folder))
    finally:
        for segment in (folder / "kumo-logs").glob("*"):
            segment.chmod(0o644)
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
