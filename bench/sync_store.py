#!/usr/bin/env python3
"""What storing one sync of the fleet costs the database: N nodes with Q scheduled queues each.

    .venv/bin/python bench/sync_store.py                     # 100 nodes x 2,000 queues, SQLite and Postgres
    .venv/bin/python bench/sync_store.py --nodes 500 --queues 500

The sync job stores what every node reported (queue counts, suspensions, bounces) every
MTACTL_SYNC_INTERVAL_SECONDS (15 s by default), in one transaction; this times that transaction alone, with every
count different from the round before (the worst case), for three rounds on each backend.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.base import QueueCounts
from controlplane.fleet.state import NodeSnapshot, _replace, recorded_holds, refresh_queue_states
from controlplane.services import Services
from controlplane.settings import Settings


def snapshot(queues: int, round_: int) -> NodeSnapshot:
    scheduled = {f"tenant{q % 50}@domain{q}.example": (q * 7 + round_) % 1000 for q in range(queues)}
    return QueueCounts(scheduled=scheduled, ready={}), [], []


async def time_backend(url: str, args: argparse.Namespace) -> None:
    services = await Services.start(Settings(database_url=url))
    nodes = [uuid.uuid4() for _ in range(args.nodes)]
    try:
        for round_ in range(3):
            reports = [snapshot(args.queues, round_) for _ in nodes]
            read_at = datetime.now(UTC)
            started = time.perf_counter()
            async with services.sessions.begin() as session:
                recorded = await recorded_holds(session, nodes)
                for node_id, report in zip(nodes, reports, strict=True):
                    await _replace(session, node_id, report, read_at, recorded[node_id])
                await refresh_queue_states(session)  # as every sync does once it has stored the nodes
            took = time.perf_counter() - started
            backend = url.split("+")[0]
            print(f"{backend}: round {round_ + 1}: {took:.2f} s to store {args.nodes} nodes x {args.queues} queues")
    finally:
        await services.close()


async def run(args: argparse.Namespace) -> None:
    await time_backend(f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='mtactl-sync-')}/sync.db", args)
    admin = await asyncpg.connect(f"{args.postgres}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{args.database}"')
        url = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://')}/{args.database}"
        await time_backend(url, args)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--queues", type=int, default=2000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mtactl_bench_sync")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
