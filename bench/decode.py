#!/usr/bin/env python3
"""CPU cost of turning KumoMTA log records into events and mirror rows, per record, without any database.

    .venv/bin/python bench/decode.py                 # 20 batches of 1000 realistic records, best of 5
    .venv/bin/python bench/decode.py --heap          # with the service's heap beside it, collector as-is vs frozen

This is the part of ingestion that runs on the service's event loop for every record (decode, map, dedupe key,
event row, mirror row values); bench/ingest.py showed it is most of the service's CPU. It prints microseconds
per record, so a change to the mapping can be compared side by side with the code before it.

``--heap`` first builds the application, as ``mtactl serve`` does, so that the garbage collector has the
service's long-lived objects to walk; it then runs the same work three times, with the heap as it is, after
``gc.freeze()``, and as ``serve`` settles the collector (``controlplane.collector``: frozen, and young collections
spaced out), and prints the time spent in collections of each generation.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_batches

from adapters.kumomta.log_source import KUMOMTA
from controlplane.db.mirror import _json_text, _values, combine
from controlplane.events.service import decode_body, event_row


def work(batches: list[bytes]) -> None:
    """The acknowledgement path's work: decode, check, key and the event row (no mapping onto the model)."""
    now = datetime.now(UTC)
    for body in batches:
        records, _, _ = decode_body(body, source=KUMOMTA, api_key=None, tenant=None)
        [event_row(r, now) for r in records]


def project(batches: list[bytes]) -> None:
    """The mirror projection's work per event before the database: read the record again, map it, make the row."""
    now = datetime.now(UTC)
    for body in batches:
        records, _, _ = decode_body(body, source=KUMOMTA, api_key=None, tenant=None)
        facts = [KUMOMTA.facts(r.payload, r.event.recipient) for r in records]
        [_values(o, now, _json_text) for o in combine(f.observation for f in facts if f.observation)]


def best_of(repeat: int, batches: list[bytes], task: Any = work) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        task(batches)
        best = min(best, time.process_time() - started)
    return best


def collections_during(batches: list[bytes], repeat: int) -> tuple[float, dict[int, float]]:
    spent = dict.fromkeys(range(3), 0.0)
    started_at = [0.0]

    def timer(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started_at[0] = time.perf_counter()
        else:
            spent[info["generation"]] += time.perf_counter() - started_at[0]

    gc.callbacks.append(timer)
    try:
        cpu = best_of(repeat, batches)
    finally:
        gc.callbacks.remove(timer)
    return cpu, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--heap", action="store_true", help="build the app first; compare as-is with gc.freeze()")
    args = parser.parse_args()
    batches = build_batches(args.batches * 1000, 1000, seed=11)
    count = args.batches * 1000
    if not args.heap:
        print(f"{count:,} records: {1e6 * best_of(args.repeat, batches) / count:.1f} µs of CPU per record acknowledged")
        mapped = best_of(args.repeat, batches, project) - best_of(args.repeat, batches)
        print(f"mirror projection, before the database: {1e6 * mapped / count:.1f} µs of CPU per event")
        return

    from controlplane.app import create_app
    from controlplane.collector import settle_collector
    from controlplane.settings import Settings

    app = create_app(Settings())
    print(f"service heap: {len(gc.get_objects()):,} objects tracked by the collector")
    for label in ("as is", "frozen", "settled"):
        if label == "frozen":
            gc.collect()
            gc.freeze()
        if label == "settled":  # what serve and worker do: frozen, and young collections spaced out
            settle_collector()
        cpu, spent = collections_during(batches, args.repeat)
        per_generation = ", ".join(f"gen{g} {1e6 * s / (count * args.repeat):.2f}" for g, s in spent.items())
        print(
            f"{label:7s}: {1e6 * cpu / count:5.1f} µs of CPU per record (best of {args.repeat}); "
            f"in collections, µs per record: {per_generation}"
        )
    del app


if __name__ == "__main__":
    main()
