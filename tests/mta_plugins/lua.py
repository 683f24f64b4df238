"""Where the KumoMTA plugins' Lua tests find their scripts and interpreter: here it must be present under CI
(MTACTL_REQUIRE_LUA, set by .ci/run), elsewhere a missing one skips the module that imports this."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "mta_plugins" / "kumomta"
LUA = shutil.which("lua5.4") or shutil.which("lua") or ""
LUAC = shutil.which("luac5.4") or shutil.which("luac") or ""

if not (LUA and LUAC):
    if os.environ.get("MTACTL_REQUIRE_LUA"):
        raise RuntimeError("lua5.4 is required (apt-get install lua5.4)")
    pytest.skip("no Lua interpreter here (apt-get install lua5.4); .ci/run installs it", allow_module_level=True)
