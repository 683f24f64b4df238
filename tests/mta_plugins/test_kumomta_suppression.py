"""The KumoMTA suppression snippet: it compiles, refuses and fails as documented under stand-ins for kumod, and
reads the list mtactl serves (the HTTP contract it relies on)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.mta_plugins.lua import LUA, LUAC, PLUGIN_DIR


@pytest.mark.parametrize("script", ["mtactl_suppression.lua", "test_mtactl_suppression.lua"])
def test_the_lua_compiles(script: str) -> None:
    result = subprocess.run([LUAC, "-p", str(PLUGIN_DIR / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_snippet_refuses_suppressed_recipients_and_fails_open_or_closed_as_set() -> None:
    result = subprocess.run([LUA, str(PLUGIN_DIR / "test_mtactl_suppression.lua")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


async def test_the_snippet_reads_the_list_mtactl_serves(services: Services, tmp_path: Path) -> None:
    async with api(services.settings) as client:
        manage = await bearer(services, "suppression:manage")
        for body in (
            {"email": "Gone@Example.COM", "reason": "hard_bounce"},
            {"email": "bob@yahoo.com", "reason": "complaint", "tenant_id": "acme\tcorp"},
            {"email": "brief@example.com", "reason": "soft_bounce"},
        ):
            assert (await client.post("/api/v1/suppressions", json=body, headers=manage)).status_code == 201
        # the MTA's own key (events:ingest) reads it, as the snippet is configured to
        served = await client.get(
            "/api/v1/suppressions/export", params={"format": "kumomta"}, headers=await bearer(services, "events:ingest")
        )
    assert served.status_code == 200
    script = tmp_path / "verdicts.lua"
    script.write_text(
        f"package.path = '{PLUGIN_DIR}/?.lua;' .. package.path\n"
        "local s = require 'mtactl_suppression'\n"
        "local text = io.read('a')\n"
        "local cache = s.new_cache({}, function() return 200, text end, os.time)\n"
        "local function v(email, tenant) return tostring(cache:verdict(email, tenant)) end\n"
        "io.write(v(s.normalize('Gone', 'EXAMPLE.com'), nil), ' ', v('bob@yahoo.com', nil), ' ',\n"
        "  v('bob@yahoo.com', 'acme\\tcorp'), ' ', v('brief@example.com', nil), ' ', v('x@example.com', nil))\n"
    )
    verdicts = subprocess.run([LUA, str(script)], input=served.content, capture_output=True, check=True).stdout
    assert verdicts.decode().split() == ["suppressed", "nil", "suppressed", "suppressed", "nil"]
