"""`mtactl sources` and `mtactl capacity` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.controlplane.test_cli import mtactl


def test_sources_are_set_listed_and_estimated_from_the_cli(tmp_path: Path) -> None:
    for n in range(30):
        done = mtactl(
            tmp_path,
            "sources",
            "set",
            f"ip-{n}",
            "--daily-limit",
            "1000",
            "--window",
            "08:00-20:00",
            "--timezone",
            "Europe/Berlin",
        )
        assert done.returncode == 0, done.stderr
    assert "ip-0: 1000/day, 08:00-20:00 Europe/Berlin" in done.stdout or "ip-29" in done.stdout
    listed = mtactl(tmp_path, "sources", "list")
    assert len(listed.stdout.splitlines()) == 30
    table = mtactl(tmp_path, "capacity")
    assert table.returncode == 0 and table.stdout.splitlines()[0].startswith("SOURCE")
    estimate = json.loads(mtactl(tmp_path, "capacity", "estimate", "100000", "--json").stdout)
    assert sum(d["messages"] for d in estimate["per_day"]) == 100_000 and estimate["sources"] == 30
    bad = mtactl(tmp_path, "sources", "set", "ip-0", "--daily-limit", "5", "--window", "20:00-08:00")
    assert bad.returncode == 1 and "window.end" in bad.stderr
    bad = mtactl(tmp_path, "sources", "set", "ip-0", "--daily-limit", "5", "--timezone", "Mars/Olympus")
    assert bad.returncode == 1 and "window.timezone" in bad.stderr
