"""The ZoneMTA plugin (mta_plugins/zonemta): its own `node --test` suite passes, including the test that loads it
through the current ZoneMTA release's plugin handler (installed from the npm registry into a temporary folder)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from controlplane.services import Services

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


# Loads the plugin as ZoneMTA's handler would (init with its config table, a logger and addHook), fires the
# log:entry hook with one message's life as ZoneMTA logs it, and waits for the batch to be taken.
DRIVER_SCRIPT = r"""
const plugin = require(process.argv[2]);
const entries = JSON.parse(process.argv[3]);
const hooks = [];
const logger = { info() {}, warn() {}, error(...a) { console.error(...a); } };
const app = {
    config: { url: process.argv[4], apiKey: process.argv[5], node: 'zone-1', spoolPath: process.argv[6] },
    logger,
    addHook: (name, hook) => hooks.push([name, hook]),
};
plugin.init(app, async err => {
    if (err) { console.error(err); process.exit(2); }
    for (const entry of entries) {
        for (const [name, hook] of hooks) { if (name === 'log:entry') { hook(entry, () => {}); } }
    }
    await plugin.shipper.flush();
    await plugin.shipper.close();
    process.exit(0);
});
"""


async def test_what_the_plugin_ships_reaches_the_mirror(services: Services, tmp_path: Path) -> None:
    import asyncio
    import json

    from adapters.zonemta.mapping import recipient_uuid
    from tests.controlplane.api_client import bearer, served
    from tests.support import shared_fixture

    def entry(name: str) -> dict[str, object]:
        return {k: v for k, v in json.loads(shared_fixture(f"zonemta/events/{name}.json")).items() if k != "_comment"}

    life = [entry("log_entry_queued"), entry("log_entry_deferred"), entry("log_entry_accepted")]
    key = (await bearer(services, "events:ingest"))["Authorization"].removeprefix("Bearer ")
    async with served(services.settings) as url:
        script = tmp_path / "drive.js"
        script.write_text(DRIVER_SCRIPT)
        process = await asyncio.create_subprocess_exec(
            NODE or "node",
            str(script),
            str(PLUGIN_DIR),
            json.dumps(life),
            url,
            key,
            str(tmp_path / "spool"),
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
    await services.projections.catch_up()
    accepted = life[2]
    message = await services.queues.get_message(recipient_uuid(str(accepted["id"]), str(accepted["to"])))
    assert message.status.value == "delivered" and message.pool_name == "default"
    assert not list((tmp_path / "spool").glob("*.jsonl")) or all(
        p.stat().st_size == 0 for p in (tmp_path / "spool").glob("*.jsonl")
    )
