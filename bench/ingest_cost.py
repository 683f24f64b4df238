#!/usr/bin/env python3
"""Where ingestion's time goes, per record: the events insert and the mirror upsert, each timed on its own.

    .venv/bin/python bench/ingest_cost.py                    # 200,000 records in groups of 10,000
    .venv/bin/python bench/ingest_cost.py --records 50000

Decodes realistic KumoMTA records (bench/ingest.py's generator) once, then writes them group by group into a
fresh Postgres database exactly as the ingest pipeline does (insert_events, then apply_observations), in separate
transactions so that each step is timed alone. For each step it prints, per record, the wall time, this process's
CPU time and the CPU time of the Postgres backend serving it (read from /proc, so Postgres must run on this
machine). bench/decode.py gives the CPU of the decoding and mapping before that. Together they say what bounds
bench/ingest.py's end-to-end figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_batches, cpu_seconds

from adapters.kumomta.log_source import KUMOMTA
from controlplane.db.events import insert_events
from controlplane.db.mirror import apply_observations
from controlplane.events.service import decode_body, event_row
from controlplane.services import Services
from controlplane.settings import Settings


def backend_cpu(pid: int) -> float:
    return cpu_seconds([pid])[pid]


def add(totals: list[float], marks: tuple[float, float, float], pid: int) -> None:
    totals[0] += time.perf_counter() - marks[0]
    totals[1] += time.process_time() - marks[1]
    totals[2] += backend_cpu(pid) - marks[2]


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
            decode_body(body, source=KUMOMTA, api_key=None, tenant=None)[0]
            for body in build_batches(args.records, args.group, 11)
        ]
        spent = {step: [0.0, 0.0, 0.0] for step in ("events insert", "mirror upsert")}  # wall, own CPU, server
        async with services.sessions() as session:
            pid = int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await session.commit()
            for records in decoded:
                now = datetime.now(UTC)
                rows = [event_row(r, now) for r in {r.key: r for r in records}.values()]
                marks = time.perf_counter(), time.process_time(), backend_cpu(pid)
                inserted = await insert_events(session, rows)
                await session.commit()
                add(spent["events insert"], marks, pid)
                facts = [KUMOMTA.facts(r.payload, r.event.recipient) for r in records if r.key in inserted]
                observations = [f.observation for f in facts if f.observation]
                marks = time.perf_counter(), time.process_time(), backend_cpu(pid)
                await apply_observations(session, observations)
                await session.commit()
                add(spent["mirror upsert"], marks, pid)
        n = args.records
        print(f"{n:,} records in groups of {args.group:,} (µs per record)")
        for step, (wall, cpu, server) in spent.items():
            per_record = f"{1e6 * wall / n:6.1f} wall, {1e6 * cpu / n:5.1f} Python CPU, {1e6 * server / n:5.1f}"
            print(f"{step}: {per_record} Postgres CPU")
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
