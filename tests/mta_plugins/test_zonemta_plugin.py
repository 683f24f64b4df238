"""The ZoneMTA plugin (mta_plugins/zonemta): its own `node --test` suite passes, including the test that loads it
through the current ZoneMTA release's plugin handler (installed from the npm registry into a temporary folder)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "mta_plugins" / "zonemta"
NODE = shutil.which("node") or shutil.which("nodejs")


def _node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"v(\d+)\.", version.strip())
    return int(match.group(1)) if match else 0


if not (NODE and _node_major(NODE) >= 18):
    if os.environ.get("MTACTL_REQUIRE_NODE"):
        raise RuntimeError("Node.js >= 18 is required (apt-get install nodejs npm)")
    pytest.skip("no Node.js >= 18 here (apt-get install nodejs npm); .ci/run installs it", allow_module_level=True)


def test_the_plugin_passes_its_node_suite() -> None:
    # MTACTL_REQUIRE_NODE passes through: under CI the npm install test fails instead of skipping.
    result = subprocess.run([NODE, "--test"], cwd=PLUGIN_DIR, capture_output=True, text=True, timeout=900)
    outcome = re.compile(r"(not ok|# (tests|pass|fail|skip))")
    summary = "\n".join(line for line in result.stdout.splitlines() if outcome.match(line))
    assert result.returncode == 0, f"{summary}\n\n{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), result.stdout[-5000:]
