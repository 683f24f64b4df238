"""A stand-in kumod for end-to-end tests: a stateful respx handler serving the admin API in the fixture shapes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.support import shared_fixture


class FakeKumod:
    def __init__(self, scheduled: dict[str, int] | None = None, *, fail_with: int | None = None) -> None:
        self.scheduled = (
            scheduled if scheduled is not None else {"spring-promo:acme@gmail.com": 1843, "acme@yahoo.com": 5210}
        )
        self.suspensions: dict[str, dict[str, Any]] = {}
        self.bounces: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.fail_with = fail_with

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if self.fail_with:
            return httpx.Response(self.fail_with, text="kumod is unwell")
        route = (request.method, request.url.path)
        if route == ("GET", "/metrics"):
            lines = [f'scheduled_count{{queue="{q}"}} {n}' for q, n in self.scheduled.items()]
            return httpx.Response(200, text="# TYPE scheduled_count gauge\n" + "\n".join(lines) + "\n")
        if route == ("GET", "/api/check-liveness/v1"):
            return httpx.Response(200)
        if route == ("POST", "/api/admin/suspend/v1"):
            ident = str(uuid.uuid4())
            self.suspensions[ident] = {
                "id": ident,
                "campaign": body.get("campaign"),
                "tenant": body.get("tenant"),
                "domain": body.get("domain"),
                "reason": body["reason"],
                "duration": "2h",
            }
            return httpx.Response(200, json={"id": ident})
        if route == ("GET", "/api/admin/suspend/v1"):
            return httpx.Response(200, json=list(self.suspensions.values()))
        if route == ("DELETE", "/api/admin/suspend/v1"):
            self.suspensions.pop(body["id"], None)
            return httpx.Response(200)
        if route == ("GET", "/api/admin/suspend-ready-q/v1"):
            return httpx.Response(200, json=[])
        if route == ("POST", "/api/admin/bounce/v1"):
            allowed = set(json.loads(shared_fixture("kumomta/bounce_request.json"))) | {
                "queue_names",
                "expires",
                "routing_domain",
            }
            if set(body) - allowed:  # kumod's deny_unknown_fields
                return httpx.Response(400, text=f"unknown field {sorted(set(body) - allowed)}")
            ident = str(uuid.uuid4())
            self.bounces[ident] = body | {"id": ident}
            return httpx.Response(200, json={"id": ident, "bounced": {}, "total_bounced": 0})
        if route == ("POST", "/api/admin/rebind/v1"):
            return httpx.Response(200, json={})
        return httpx.Response(404, text="not found")
