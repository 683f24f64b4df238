"""The garbage collector as a long-running mtactl process (``serve``, ``worker``) sets it, once started.

Two changes, each measured:

* ``gc.freeze()``: what is alive once the process has started (modules, routes, the schema) lives as long as the
  process; out of the collector's sight it is no longer walked by every full collection, which ingestion's
  allocations trigger often: about a fifth of the acknowledgement's decoding CPU (bench/decode.py --heap).
* A young collection every 10,000 allocations instead of 700. A projection pass keeps tens of thousands of
  objects alive for the pass (the events, their facts, the rows), and at 700 they were promoted and walked
  again by full collections many times over: 6 to 7 µs per event even with the heap frozen, 13 µs without.
  bench/projections.py side by side (200,000 events, all four projections in joint passes): 8,971 → 9,917
  events/s, 65.4 → 55.0 µs of mtactl CPU per event. The acknowledgement's decoding is unchanged by it
  (bench/decode.py --heap: 17.2 µs frozen, 16.8 settled).
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 10_000


def settle_collector() -> None:
    """Freeze what exists now and space young collections out; call once the process's long-lived state is
    built."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
