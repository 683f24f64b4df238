#!/usr/bin/env python3
"""Where ingestion's time goes, per record: the events insert and the mirror upsert, each timed on its own.

    .venv/bin/python bench/ingest_cost.py                    # 200,000 records in groups of 10,000
    .venv/bin/python bench/ingest_cost.py --records 50000

Decodes realistic KumoMTA records (bench/ingest.py's generator) once, then writes them group by group into a
fresh Postgres database exactly as the ingest pipeline does (insert_events, then apply_observations), in separate
transactions so that each step is timed alone. For each step it prints wall time and this process's CPU time per
record; their difference is (roughly) the time spent waiting on Postgres. bench/decode.py gives the CPU of the
decoding and mapping before that. Together they say what bounds bench/ingest.py's end-to-end figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_batches

from controlplane.db.events import insert_events
from controlplane.db.mirror import apply_observations
from controlplane.events.service import decode_body, event_row
from controlplane.services import Services
from controlplane.settings import Settings


async def run(args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(f"{args.postgres}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{args.database}"')
    finally:
        await admin.close()
    url = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://')}/{args.database}"
    services = await Services.start(Settings(database_url=url))
    try:
        decoded = [
            decode_body(body, api_key=None, tenant=None)[0] for body in build_batches(args.records, args.group, 11)
        ]
        events_wall = events_cpu = mirror_wall = mirror_cpu = 0.0
        for records in decoded:
            now = datetime.now(UTC)
            rows = [event_row(r, now) for r in {r.key: r for r in records}.values()]
            wall, cpu = time.perf_counter(), time.process_time()
            async with services.sessions.begin() as session:
                inserted = await insert_events(session, rows)
            events_wall += time.perf_counter() - wall
            events_cpu += time.process_time() - cpu
            observations = [r.observation for r in records if r.observation and r.key in inserted]
            wall, cpu = time.perf_counter(), time.process_time()
            async with services.sessions.begin() as session:
                await apply_observations(session, observations)
            mirror_wall += time.perf_counter() - wall
            mirror_cpu += time.process_time() - cpu
        n = args.records
        print(f"{n:,} records in groups of {args.group:,} (µs per record)")
        for step, wall, cpu in (("events insert", events_wall, events_cpu), ("mirror upsert", mirror_wall, mirror_cpu)):
            waited = 1e6 * (wall - cpu) / n
            print(f"{step}: {1e6 * wall / n:6.1f} wall, {1e6 * cpu / n:5.1f} Python CPU, ~{waited:5.1f} in Postgres")
    finally:
        await services.close()
        admin = await asyncpg.connect(f"{args.postgres}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--group", type=int, default=10_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mtactl_bench_ingest_cost")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
