"""Schemathesis hooks for the gate (loaded through ``hooks`` in schemathesis.toml)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_load_schema(context: schemathesis.HookContext, raw_schema: dict[str, Any]) -> None:
    """The fuzzer leaves out ``cursor``: the server alone issues it (an opaque, encoded position), so a generated
    one is never valid and refusing it (400) is right. Cursors the API did not issue are tested in
    tests/controlplane/queues and tests/controlplane/events; the served schema itself is unchanged."""
    for item in raw_schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [p for p in operation["parameters"] if p.get("name") != "cursor"]
