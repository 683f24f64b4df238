#!/usr/bin/env python3
"""`mtactl legacy import` throughput: N realistic legacy rows (NDJSON), imported into an empty database, then the
same file again (everything already present), on SQLite and on Postgres.

    .venv/bin/python bench/legacy_import.py                  # 50,000 rows, SQLite and Postgres
    .venv/bin/python bench/legacy_import.py --rows 200000 --backend sqlite
    .venv/bin/python bench/legacy_import.py --profile        # where the first run's time goes (cProfile, top 25)

Prints rows/s for each run and the re-run's speed-up over the first run. The database is migrated before the
clock starts; the audit record and the final checksum are inside the timing, as in the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.legacy import legacy_message_uuid
from controlplane.services import Services
from controlplane.settings import Settings
from migrations.legacy.import_queue_items import import_legacy_file

STATUSES = ["waiting", "in-progress", "completed", "cancelled"]
SERVICES = ["billing", "technical-support", "sales", ""]
DOMAINS = ["example.com", "Example.ORG", "mail.example.net", "corp.example"]


def write_rows(path: Path, rows: int) -> None:
    rng = random.Random(7)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with path.open("w") as out:
        for n in range(rows):
            created = start + timedelta(seconds=rng.randrange(300 * 86400))
            status = rng.choice(STATUSES)
            row = {
                "id": f"Q-{n:08d}",
                "customerId": f"cust-{rng.randrange(2000)}",
                "customerName": f"Customer {n}",
                "customerEmail": f"user{n}@{rng.choice(DOMAINS)}",
                "customerPhone": f"+1-555-{rng.randrange(10000):04d}",
                "serviceType": rng.choice(SERVICES),
                "priority": rng.randrange(11),
                "status": status,
                "notes": "call back after 5pm" if n % 3 == 0 else "",
                "estimatedWaitTime": rng.randrange(120),
                "createdAt": created.isoformat().replace("+00:00", "Z"),
                "updatedAt": (created + timedelta(minutes=rng.randrange(60))).isoformat(),
                "notificationsSent": ["email"] if n % 2 else ["email", "sms"],
            }
            if status == "completed":
                row["actualWaitTime"] = rng.randrange(120)
            out.write(json.dumps(row) + "\n")


async def time_backend(name: str, url: str, source: Path, rows: int, profile: bool) -> None:
    services = await Services.start(Settings(database_url=url))
    try:
        figures = []
        for run in ("first run", "re-run"):
            legacy_message_uuid.cache_clear()  # each CLI run is a fresh process
            profiler = cProfile.Profile() if profile and run == "first run" else None
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            report = await import_legacy_file(services.sessions, services.audit, source)
            if profiler:
                profiler.disable()
            took = time.perf_counter() - started
            figures.append(took)
            print(
                f"{name}: {run}: {rows:,} rows in {took:.2f} s = {rows / took:,.0f} rows/s "
                f"(imported {report.imported:,}, already present {report.already_present:,})"
            )
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        print(f"{name}: re-run {figures[0] / figures[1]:.1f}x faster than the first run")
    finally:
        await services.close()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mtactl-legacy-bench-") as name:
        await run_in(Path(name), args)


async def run_in(workdir: Path, args: argparse.Namespace) -> None:
    source = workdir / "items.ndjson"
    write_rows(source, args.rows)
    if args.backend in ("sqlite", "both"):
        await time_backend("sqlite", f"sqlite+aiosqlite:///{workdir}/import.db", source, args.rows, args.profile)
    if args.backend in ("postgres", "both"):
        admin = await asyncpg.connect(f"{args.postgres}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{args.database}"')
            url = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://')}/{args.database}"
            await time_backend("postgres", url, source, args.rows, args.profile)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mtactl_bench_legacy_import")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
