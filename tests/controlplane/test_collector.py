"""A long-running process settles the collector once started: its state frozen, young collections spaced out."""

from __future__ import annotations

import subprocess
import sys

from controlplane.collector import YOUNG_COLLECTION_THRESHOLD

# In a process of its own: freezing the test process's heap would outlive this test.
PROBE = (
    "import gc; from controlplane.collector import settle_collector; "
    "before = gc.get_threshold(); settle_collector(); "
    "print(before[0], gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], gc.get_freeze_count() > 0)"
)


def test_settling_freezes_the_heap_and_spaces_young_collections_out() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["700", str(YOUNG_COLLECTION_THRESHOLD), "True", "True"]
