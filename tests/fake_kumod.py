"""A stand-in kumod for end-to-end tests: a stateful respx handler serving the admin API in the fixture shapes."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tests import kumod_rules
from tests.support import shared_fixture


class FakeKumod:
    def __init__(
        self, scheduled: dict[str, int] | None = None, *, fail_with: int | None = None, garbage: bool = False
    ) -> None:
        self.scheduled = (
            scheduled if scheduled is not None else {"spring-promo:acme@gmail.com": 1843, "acme@yahoo.com": 5210}
        )
        self.ready: dict[str, int] = {}
        self.suspensions: dict[str, dict[str, Any]] = {}
        self.ready_suspensions: dict[str, dict[str, Any]] = {}
        self.bounces: dict[str, dict[str, Any]] = {}
        self.suspended_names: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.fail_with = fail_with
        self.garbage = garbage  # answer 200 with something no kumod sends (a proxy's error page, say)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if self.fail_with:
            return httpx.Response(self.fail_with, text="kumod is unwell")
        if self.garbage:
            return httpx.Response(200, text="<html><body>Gateway says hello {{{</body></html>")
        route = (request.method, request.url.path)
        if route == ("GET", "/metrics"):
            lines = ["# TYPE scheduled_count gauge"]
            lines += [f'scheduled_count{{queue="{q}"}} {n}' for q, n in self.scheduled.items()]
            lines += ["# TYPE ready_count gauge"]
            lines += [f'ready_count{{service="smtp_client:{q}"}} {n}' for q, n in self.ready.items()]
            return httpx.Response(200, text="\n".join(lines) + "\n")
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
            # kumod keeps queue_names but does not list them (SuspendV1ListEntry has no such field)
            self.suspended_names[ident] = list(body.get("queue_names") or [])
            return httpx.Response(200, json={"id": ident})
        if route == ("GET", "/api/admin/suspend/v1"):
            return httpx.Response(200, json=list(self.suspensions.values()))
        if route == ("DELETE", "/api/admin/suspend/v1"):
            self.suspensions.pop(body["id"], None)
            return httpx.Response(200)
        if route == ("GET", "/api/admin/suspend-ready-q/v1"):
            return httpx.Response(200, json=list(self.ready_suspensions.values()))
        if route == ("POST", "/api/admin/suspend-ready-q/v1"):
            ident = str(uuid.uuid4())
            self.ready_suspensions[ident] = {
                "id": ident,
                "name": body["name"],
                "reason": body["reason"],
                "duration": body.get("duration", "5m"),
            }
            return httpx.Response(200, json={"id": ident})
        if route == ("DELETE", "/api/admin/suspend-ready-q/v1"):
            self.ready_suspensions.pop(body["id"], None)
            return httpx.Response(200)
        if route == ("GET", "/api/admin/bounce/v1"):
            entries = [
                {k: b.get(k) for k in ("id", "campaign", "tenant", "domain", "routing_domain", "reason")}
                | {"duration": "5m", "bounced": {}, "total_bounced": b["total_bounced"]}
                for b in self.bounces.values()
            ]
            return httpx.Response(200, json=entries)
        if route == ("DELETE", "/api/admin/bounce/v1"):
            self.bounces.pop(body["id"], None)
            return httpx.Response(200)
        if route == ("POST", "/api/admin/bounce/v1"):
            allowed = set(json.loads(shared_fixture("kumomta/bounce_request.json"))) | {
                "queue_names",
                "expires",
                "routing_domain",
            }
            if set(body) - allowed:  # kumod's deny_unknown_fields
                return httpx.Response(400, text=f"unknown field {sorted(set(body) - allowed)}")
            ident = str(uuid.uuid4())
            bounced = {q: n for q, n in self.scheduled.items() if self.selects(body, q)}
            for queue in bounced:
                self.scheduled[queue] = 0
            self.bounces[ident] = body | {"id": ident, "total_bounced": sum(bounced.values())}
            return httpx.Response(200, json={"id": ident, "bounced": bounced, "total_bounced": sum(bounced.values())})
        if route == ("POST", "/api/admin/rebind/v1"):
            return httpx.Response(200, json={})
        return httpx.Response(404, text="not found")

    @staticmethod
    def selects(body: dict[str, Any], queue: str) -> bool:
        return kumod_rules.selects("bounce", body, queue)

    def posted(self, path: str) -> list[Any]:
        """The bodies POSTed to ``path``, in order."""
        return [body for method, p, body in self.requests if method == "POST" and p == path]


async def register(client: httpx.AsyncClient, headers: dict[str, str], *names: str) -> list[str]:
    """Register stand-in kumods named ``names`` (served at http://<name>.test:8000), labelled region=eu."""
    ids = []
    for name in names:
        body = {"name": name, "kind": "kumomta", "base_url": f"http://{name}.test:8000", "labels": {"region": "eu"}}
        response = await client.post("/api/v1/nodes", json=body, headers=headers)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


@contextlib.contextmanager
def serving(kumod: Callable[[httpx.Request], httpx.Response]) -> Iterator[str]:
    """Serve a stand-in MTA (``FakeKumod``, ``FakeZoneMta``) over real HTTP on a free local port (for tests that
    run mtactl as a separate process)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
            request = httpx.Request(
                self.command, f"http://mta{self.path}", headers=headers, content=self.rfile.read(length)
            )
            response = kumod(request)
            self.send_response(response.status_code)
            self.send_header("Content-Length", str(len(response.content)))
            if "content-type" in response.headers:
                self.send_header("Content-Type", response.headers["content-type"])
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *_: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
