"""The KumoMTA Lua log hook: it compiles, behaves under stand-ins for kumod, and what it posts is what mtactl takes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.mta_plugins.lua import LUA, LUAC, PLUGIN_DIR
from tests.support import shared_fixture


@pytest.mark.parametrize("script", ["mtactl_log_hook.lua", "test_mtactl_log_hook.lua"])
def test_the_lua_compiles(script: str) -> None:
    result = subprocess.run([LUAC, "-p", str(PLUGIN_DIR / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_hook_sends_arrays_and_rejects_transiently_on_any_failure() -> None:
    result = subprocess.run([LUA, str(PLUGIN_DIR / "test_mtactl_log_hook.lua")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


async def test_the_body_the_hook_builds_is_accepted_by_mtactl(services: Services, tmp_path: Path) -> None:
    import json

    records = [json.dumps(r) for r in json.loads(shared_fixture("kumomta/webhook_batch.json"))]
    script = tmp_path / "body.lua"
    script.write_text(
        f"package.path = '{PLUGIN_DIR}/?.lua;' .. package.path\n"
        "local hook = require 'mtactl_log_hook'\n"
        "local records = {}\n"
        "for line in io.lines() do table.insert(records, line) end\n"
        "io.write(hook.batch_body(records))\n"
    )
    body = subprocess.run([LUA, str(script)], input="\n".join(records).encode(), capture_output=True, check=True).stdout
    async with api(services.settings) as client:
        response = await client.post(
            "/api/v1/events/ingest/kumomta", content=body, headers=await bearer(services, "events:ingest")
        )
    assert response.status_code == 202 and response.json()["accepted"] == 4
