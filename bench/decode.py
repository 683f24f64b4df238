#!/usr/bin/env python3
"""CPU cost of turning KumoMTA log records into events and mirror rows, per record, without any database.

    .venv/bin/python bench/decode.py                 # 20 batches of 1000 realistic records, best of 5

This is the part of ingestion that runs on the service's event loop for every record (decode, map, dedupe key,
event row, mirror row values); bench/ingest.py showed it is most of the service's CPU. It prints microseconds
per record, so a change to the mapping can be compared side by side with the code before it.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_batches

from controlplane.db.mirror import _json_text, _values, combine
from controlplane.events.service import decode_body, event_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    batches = build_batches(args.batches * 1000, 1000, seed=11)
    best = float("inf")
    for _ in range(args.repeat):
        started = time.process_time()
        now = datetime.now(UTC)
        for body in batches:
            records, _, _ = decode_body(body, api_key=None, tenant=None)
            [event_row(r, now) for r in records]
            [_values(o, now, _json_text) for o in combine(r.observation for r in records if r.observation)]
        best = min(best, time.process_time() - started)
    count = args.batches * 1000
    print(f"{count:,} records: {1e6 * best / count:.1f} µs of CPU per record (best of {args.repeat})")


if __name__ == "__main__":
    main()
