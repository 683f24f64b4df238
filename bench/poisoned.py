#!/usr/bin/env python3
"""What one record the database refuses costs its group: a batch with one poisoned record against a clean one.

    .venv/bin/python bench/poisoned.py                    # batches of 1000, 3 rounds
    .venv/bin/python bench/poisoned.py --records 5000

Creates a throw-away Postgres database (``--dsn``), and writes batches of realistic records (bench/ingest.py's)
through ``IngestPipeline``, alternately clean and with one record the database refuses (simulated: the event
insert raises an IntegrityError whenever that record is in the rows, as a constraint would). Validation before
the write catches every refusal mtactl knows of, so the poison has to be injected. Prints seconds per batch of
each kind and their ratio. Run it from another checkout (``cd old && python /path/to/bench/poisoned.py``)
to compare code side by side: it imports ``controlplane`` from the current directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, os.getcwd())
sys.path.insert(1, str(Path(__file__).resolve().parent))

from ingest import build_batches
from sqlalchemy import exc as sa_exc

from adapters.kumomta.log_source import KUMOMTA
from controlplane.events import service as ingest_service
from controlplane.events.service import IngestPipeline, decode_body
from controlplane.services import Services
from controlplane.settings import Settings

POISON = "poisoned-record"


def poison_the_database() -> None:
    real = ingest_service.insert_events

    async def insert_events(session: Any, rows: Any) -> Any:
        if any(POISON in row for row in rows):
            raise sa_exc.IntegrityError("INSERT INTO events ...", {}, Exception("check constraint violated"))
        return await real(session, rows)

    ingest_service.insert_events = insert_events  # type: ignore[assignment]


async def run(args: argparse.Namespace) -> None:
    name = f"mtactl_bench_poison_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = args.dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    spool = tempfile.mkdtemp(prefix="mtactl-poison-")
    services = await Services.start(Settings(database_url=f"{base}/{name}", spool_dir=spool))
    poison_the_database()
    pipeline = IngestPipeline(services.sessions, Path(spool), Settings().ingest_max_batch)
    await pipeline.start()
    try:
        bodies = build_batches(args.records * 2 * args.rounds, args.records, seed=args.seed)
        times: dict[str, list[float]] = {"clean": [], "one poisoned record": []}
        for n, body in enumerate(bodies):
            kind = list(times)[n % 2]
            if kind != "clean":
                batch = json.loads(body)
                batch[len(batch) // 2]["id"] = POISON
                body = json.dumps(batch).encode()
            records, dead, _ = decode_body(body, source=KUMOMTA, api_key="bench", tenant=None)
            started = time.perf_counter()
            outcome = await pipeline.submit(records, dead)
            times[kind].append(time.perf_counter() - started)
            assert outcome[0] >= len(records) - 1, outcome
        for kind, values in times.items():
            print(f"{kind:>20}: best {min(values):6.3f} s per batch of {args.records}")
        print(f"poisoned / clean: {min(times['one poisoned record']) / min(times['clean']):.1f}x")
    finally:
        await pipeline.stop()
        await services.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
