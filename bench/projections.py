#!/usr/bin/env python3
"""How fast the projections apply the event log, alone, and where their time goes: per projection and jointly.

    .venv/bin/python bench/projections.py                  # 200,000 records in event time order
    .venv/bin/python bench/projections.py --records 500000 --batch 20000

Appends the records to a fresh Postgres database's log (no service, no HTTP: write_group in groups of 1000, as
the writers do), then, on the same log, side by side in one run:

1. each projection alone (the mirror, then the rollups), each from the start of the log;
2. both together in joint passes (one read of the log per pass, the mirror's lane beside the rollups');
3. the policy matches and the suppressions alone, then all four in joint passes (what ``mtactl serve`` or
   ``mtactl worker`` runs).

For each it prints events/s, and the CPU per event of this process (decoding, mapping, building statements) and
of the Postgres backend serving it (read from /proc). The projections' tables are emptied between the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_batches

from adapters.kumomta.log_source import KUMOMTA
from controlplane.collector import settle_collector
from controlplane.events.service import decode_body, write_group
from controlplane.projections import service as projection_service
from controlplane.projections import standard_projections
from controlplane.projections.service import ProjectionService
from controlplane.services import Services
from controlplane.settings import Settings


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def reset(services: Services) -> None:
    async with services.sessions.begin() as session:
        await session.execute(text("DELETE FROM message_queue"))
        await session.execute(text("DELETE FROM message_counts"))
        await session.execute(text("DELETE FROM metrics_counts"))
        await session.execute(text("DELETE FROM metrics_depths"))
        await session.execute(text("DELETE FROM event_rollups"))
        await session.execute(text("DELETE FROM policy_matches"))
        await session.execute(text("DELETE FROM suppressions"))
        await session.execute(text("DELETE FROM suppression_soft_bounces"))
        await session.execute(text("DELETE FROM projection_checkpoints"))


async def timed(services: Services, names: list[str], joint: bool, events: int) -> str:
    runner = ProjectionService(services.sessions, standard_projections())
    # The pool keeps two connections (a joint pass runs two lanes side by side): their backends are ours.
    async with services.engine.connect() as first, services.engine.connect() as second:
        pids = [int((await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()) for c in (first, second)]
    server, own, wall = sum(map(backend_cpu, pids)), time.process_time(), time.perf_counter()
    if joint:
        await runner.catch_up(names, wait_seconds=0)
    else:
        for name in names:
            while await runner.run_once(name):
                pass
    wall, own, server = time.perf_counter() - wall, time.process_time() - own, sum(map(backend_cpu, pids)) - server
    per = 1e6 / events
    return (
        f"{events / wall:>9,.0f} events/s  ({wall:5.1f} s)   CPU per event: mtactl {own * per:5.1f} µs, "
        f"Postgres {server * per:5.1f} µs"
    )


async def run(args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(f"{args.postgres}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{args.database}"')
    await admin.close()
    url = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://')}/{args.database}"
    # Two pooled connections and no more, so that the backends whose CPU is read are the ones doing the work.
    services = await Services.start(Settings(database_url=url, database_pool_size=2))
    settle_collector()  # as `mtactl worker` and `serve` do once started
    projection_service.BATCH = args.batch
    try:
        print(f"appending {args.records:,} records (event time order) ...", flush=True)
        for body in build_batches(args.records, 1000, args.seed, "time"):
            records, dead, _ = decode_body(body, source=KUMOMTA, api_key=None, tenant=None)
            async with services.sessions.begin() as session:
                await write_group(session, records, dead)
        async with services.sessions() as session:
            events = int((await session.execute(text("SELECT count(*) FROM events"))).scalar_one())
        print(f"{events:,} events in the log; passes of {args.batch:,} events\n")
        for label, names, joint in (
            ("mirror alone", ["mirror"], False),
            ("rollups alone", ["rollups"], False),
            ("both, joint passes", ["mirror", "rollups"], True),
            ("policy matches alone", ["policy_matches"], False),
            ("suppressions alone", ["suppressions"], False),
            ("all four, joint", ["mirror", "rollups", "policy_matches", "suppressions"], True),
        ):
            await reset(services)
            print(f"{label:20} {await timed(services, names, joint, events)}", flush=True)
    finally:
        await services.close()
        admin = await asyncpg.connect(f"{args.postgres}/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=projection_service.BATCH, help="events per pass")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mtactl_bench_projections")
    parser.add_argument("--seed", type=int, default=11)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
