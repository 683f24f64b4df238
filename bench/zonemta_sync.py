#!/usr/bin/env python3
"""What syncing a ZoneMTA node costs: listing its queue page by page and bringing the mirror in line.

    .venv/bin/python bench/zonemta_sync.py                 # 20,000 queued rows, Postgres and SQLite
    .venv/bin/python bench/zonemta_sync.py --rows 100000

The node is the stand-in ZoneMTA (tests/fake_zonemta.py) answering in-process (respx), so the figures are
mtactl's side only: paging, decoding, and the database work of ``fleet.state.mirror_listing``. Four syncs, side
by side on each backend:

1. first: every row is new to the mirror (inserts);
2. unchanged: the same listing again (what every interval costs on a quiet node);
3. churn: 10% of the rows gone (missed once: kept) and 10% new;
4. the same listing once more: the rows missing twice are marked gone.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import respx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.zonemta import client as zonemta_client
from controlplane.fleet.schema import NodeCreate
from controlplane.services import Services
from controlplane.settings import Settings
from tests.fake_zonemta import FakeZoneMta

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "example.org", "mail.example.net"] + [
    f"d{n}.example" for n in range(200)
]


async def one_backend(label: str, url: str, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    services = await Services.start(Settings(database_url=url))
    zone = FakeZoneMta()
    for n in range(rows):
        zone.add_message(f"user{n}@{rng.choice(DOMAINS)}", deferred=rng.random() < 0.3)
    try:
        with respx.mock(assert_all_called=False) as router:
            router.route(host="zone-1.bench").mock(side_effect=zone)
            await services.fleet.create(
                NodeCreate(name="zone-1", kind="zonemta", base_url="http://zone-1.bench:12080"), actor="bench"
            )

            async def sync(step: str) -> None:
                started = time.perf_counter()
                (outcome,) = await services.fleet_state.sync()
                wall = time.perf_counter() - started
                assert outcome.error is None, outcome.error
                async with services.sessions() as session:
                    counted = await session.execute(text("SELECT status, count(*) FROM message_queue GROUP BY status"))
                    statuses = {status: n for status, n in counted}
                print(
                    f"{label:9} {step:34} {wall:6.2f} s  {len(zone.rows) / wall:>9,.0f} rows/s   mirror: {statuses}",
                    flush=True,
                )

            await sync("first (all new)")
            await sync("unchanged")
            gone = {id(r) for r in rng.sample(zone.rows, len(zone.rows) // 10)}
            zone.rows = [r for r in zone.rows if id(r) not in gone]
            for n in range(rows // 10):
                zone.add_message(f"new{n}@{rng.choice(DOMAINS)}")
            await sync("churn (10% gone, 10% new)")
            await sync("again (the gone marked)")
    finally:
        await services.close()


async def run(args: argparse.Namespace) -> None:
    zonemta_client.CONCURRENT_CHANGES = 8
    admin = await asyncpg.connect(f"{args.postgres}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{args.database}"')
    await admin.close()
    try:
        pg = f"{args.postgres.replace('postgresql://', 'postgresql+asyncpg://')}/{args.database}"
        await one_backend("postgres", pg, args.rows, args.seed)
        with tempfile.TemporaryDirectory() as folder:
            await one_backend("sqlite", f"sqlite+aiosqlite:///{folder}/bench.db", args.rows, args.seed)
    finally:
        admin = await asyncpg.connect(f"{args.postgres}/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="mtactl_bench_zonemta_sync")
    parser.add_argument("--seed", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
