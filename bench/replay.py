#!/usr/bin/env python3
"""Spool replay speed: one spool file per transaction (as replay worked before) against several files per
transaction (``IngestPipeline.replay_pending``), side by side in one run.

    .venv/bin/python bench/replay.py                          # 50,000 records in files of 100, two rounds
    .venv/bin/python bench/replay.py --records 20000 --per-file 50

Creates a throw-away Postgres database (``--dsn``, default the local server), spools the same realistic records
(bench/ingest.py's) into files as the writers do during an outage, and times their replay each way, alternating
the two ways over ``--rounds`` rounds on emptied tables. Prints records/s of each and their ratio; only the
ratio is meant to be compared (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_batches

from adapters.kumomta.log_source import KUMOMTA
from controlplane.events.service import IngestPipeline, _to_spool, decode_body
from controlplane.events.spool import Spool
from controlplane.services import Services
from controlplane.settings import Settings


def spool_records(directory: Path, total: int, per_file: int, seed: int) -> int:
    spool = Spool(directory)
    written = 0
    for body in build_batches(total, per_file, seed):
        records, dead, rejected = decode_body(body, source=KUMOMTA, api_key="bench", tenant=None)
        assert not rejected
        spool.write(_to_spool(records, dead))
        written += len(records)
    return written


async def replay(services: Services, directory: Path, max_batch: int, grouped: bool) -> float:
    pipeline = IngestPipeline(services.sessions, directory, max_batch, services.settings.ingest_writers)
    started = time.perf_counter()
    if grouped:
        await pipeline.replay_pending()
    else:
        for path in Spool(directory).pending():
            await pipeline.replay_file(path)
    elapsed = time.perf_counter() - started
    assert not Spool(directory).pending()
    return elapsed


async def run(args: argparse.Namespace) -> None:
    name = f"mtactl_bench_replay_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = args.dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    work = Path(tempfile.mkdtemp(prefix="mtactl-replay-"))
    services = await Services.start(Settings(database_url=f"{base}/{name}", spool_dir=str(work / "unused")))
    try:
        source = work / "source"
        records = spool_records(source, args.records, args.per_file, args.seed)
        files = len(Spool(source).pending())
        print(f"{records} records in {files} spool files of {args.per_file}; ingest_max_batch {args.max_batch}")
        times: dict[str, list[float]] = {"one file per transaction": [], "grouped": []}
        for round_ in range(args.rounds):
            for label in list(times) if round_ % 2 == 0 else list(times)[::-1]:
                async with services.engine.begin() as connection:
                    await connection.exec_driver_sql("TRUNCATE events, message_queue")
                target = work / "replay"
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target)
                elapsed = await replay(services, target, args.max_batch, grouped=label == "grouped")
                times[label].append(elapsed)
                print(f"  round {round_ + 1} {label:>24}: {elapsed:6.2f} s  {records / elapsed:8.0f} records/s")
        best = {label: min(values) for label, values in times.items()}
        for label, seconds in best.items():
            print(f"best {label:>24}: {records / seconds:8.0f} records/s")
        ratio = best["one file per transaction"] / best["grouped"]
        print(f"grouped / one file per transaction: {ratio:.2f}x")
    finally:
        await services.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--per-file", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=Settings().ingest_max_batch)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
