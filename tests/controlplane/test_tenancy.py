"""Tenant confinement over every route the app has: a key bound to tenant A, sending whatever it likes, never
reads, changes or targets tenant B's messages, queues, holds, operations or events.

The requests are generated from the app's own OpenAPI description (every operation, every parameter, every body
field), filled with tenant B's identifiers, so a route added later is covered without touching this test; a
route missing from the description fails it."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import respx

from adapters import http as node_http
from controlplane.app import create_app
from controlplane.services import Services
from tests import kumod_rules
from tests.controlplane.api_client import api, bearer
from tests.fake_kumod import FakeKumod, register
from tests.support import load_fixture

B_QUEUES = {"beta@gmail.com": 7, "spring:beta@yahoo.com": 9}
A_QUEUES = {"acme@gmail.com": 5}
A_SCOPES = ("email:read", "email:send", "queue:manage", "analytics:read", "events:ingest", "suppression:manage")


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


def b_record() -> dict[str, Any]:
    record: dict[str, Any] = load_fixture("kumomta/log_delivery.json")
    record.update(
        type="TransientFailure",
        id="beefbeefbeefbeefbeefbeefbeefbeef",
        recipient="bob.beta@gmail.com",
        queue="beta@gmail.com",
        meta={"tenant": "beta"},
    )
    return record


def values_for(name: str, b: dict[str, str]) -> list[Any]:
    """What an attacker bound to A would put in a field of this name to reach B."""
    lowered = name.lower()
    if "tenant" in lowered:
        return ["beta"]
    if "queue" in lowered:
        return [b["queue"], "beta@yahoo.com", "spring:beta@yahoo.com"]
    if lowered in ("id", "message_id", "operation_id", "hold_id", "key_ref", "node"):
        return [b["message"], b["operation"], b["hold"], b["mta_id"], "kumo-1"]
    if "recipient" in lowered:
        return [b["recipient"]]
    if "domain" in lowered:
        return ["gmail.com", "yahoo.com"]
    return ["beta"]


def instances(schema: dict[str, Any], spec: dict[str, Any], name: str, b: dict[str, str]) -> Iterator[Any]:
    """A few values for ``schema``, B's identifiers wherever a string goes."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            for option in schema[key]:
                yield from itertools.islice(instances(option, spec, name, b), 3)
            return
    kind = schema.get("type")
    if "enum" in schema:
        yield from schema["enum"]
    elif kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        base = {p: next(instances(s, spec, p, b), None) for p, s in properties.items()}
        yield {k: v for k, v in base.items() if v is not None}
        for field, field_schema in properties.items():  # every value of every field in turn
            for value in itertools.islice(instances(field_schema, spec, field, b), 6):
                yield {k: v for k, v in (base | {field: value}).items() if v is not None}
    elif kind == "array":
        for item in itertools.islice(instances(schema.get("items", {}), spec, name, b), 3):
            yield [item]
    elif kind == "boolean":
        yield from (False, True)
    elif kind in ("integer", "number"):
        yield 1
    elif kind == "null":
        return
    else:
        yield from values_for(name, b)


def requests_for(spec: dict[str, Any], b: dict[str, str]) -> Iterator[tuple[str, str, dict[str, Any], Any]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            parameters = operation.get("parameters", [])
            path_names = [p["name"] for p in parameters if p["in"] == "path"]
            query = [p for p in parameters if p["in"] == "query"]
            bodies: list[Any] = [None]
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content:
                bodies = list(itertools.islice(instances(content["schema"], spec, "body", b), 60))
                if "/ingest/" in path:
                    moved = {"queue": "acme@gmail.com", "meta": {"tenant": "acme"}}
                    bodies += [
                        b_record(),
                        [b_record()],
                        {**b_record(), **moved, "type": "Delivery", "timestamp": 1795422700},
                    ]
            for path_values in itertools.product(*(values_for(n, b) for n in path_names)):
                url = path
                for name, value in zip(path_names, path_values, strict=True):
                    url = url.replace("{" + name + "}", str(value))
                queries: list[dict[str, Any]] = [{}]
                for parameter in query:
                    for value in itertools.islice(
                        instances(parameter.get("schema", {}), spec, parameter["name"], b), 4
                    ):
                        queries.append({parameter["name"]: value})
                for params, body in itertools.product(queries, bodies):
                    yield method.upper(), url, params, body


@respx.mock
async def test_a_tenant_bound_key_never_reaches_another_tenants_data_on_any_route(services: Services) -> None:
    kumod = FakeKumod(B_QUEUES | A_QUEUES)
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings) as client:
        # Tenant B's world, made by an unbound operator key and B's own ingest.
        operator = await bearer(
            services, "fleet:manage", "queue:manage", "email:read", "events:ingest", "suppression:manage"
        )
        [node_id] = await register(client, operator, "kumo-1")
        assert (await client.post("/api/v1/events/ingest/kumomta", json=[b_record()], headers=operator)).json()[
            "accepted"
        ] == 1
        await client.post("/api/v1/nodes/sync", headers=operator)
        held = await client.post(
            "/api/v1/operations",
            json={"operation": "suspend", "reason": "b", "tenant": "beta", "domain": "gmail.com"},
            headers=operator,
        )
        [b_message] = (await client.get("/api/v1/messages?tenant_id=beta", headers=operator)).json()["data"]
        # B's suppression of its own recipient: A must neither see it nor lift it
        b_suppression = {"email": b_message["recipient"], "tenant_id": "beta", "reason": "complaint"}
        assert (await client.post("/api/v1/suppressions", json=b_suppression, headers=operator)).status_code == 201
        b = {
            "message": b_message["id"],
            "recipient": b_message["recipient"],
            "queue": b_message["queue_name"],
            "operation": held.json()["id"],
            "hold": held.json()["nodes"][0]["reference"],
            "mta_id": node_id,
        }
        b_events = (await client.get(f"/api/v1/messages/{b['message']}/events", headers=operator)).json()
        changes_before = len(kumod.requests)

        spec = (await client.get("/schema/openapi.json")).json()
        documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if m != "parameters"}
        routed = {
            (method, route.path.replace(":str", "").replace(":uuid", ""))
            for route in create_app(services.settings, run_jobs=False).routes
            for handler in getattr(route, "route_handlers", [])
            for method in getattr(handler, "http_methods", ())
            if method not in ("OPTIONS", "HEAD") and not route.path.startswith("/schema")
        }
        assert {r for r in routed if r not in documented} == set()  # every route is generated below

        a = await bearer(services, *A_SCOPES, tenant="acme")
        b_only = [b["message"], b["recipient"], b["operation"], b["hold"], "beta@", "beta"]
        sent = 0
        for method, url, params, body in requests_for(spec, b):
            response = await client.request(method, url, params=params, json=body, headers=a)
            sent += 1
            # (detailed health answers 503 while the jobs, not started here, have not run: its contract)
            assert response.status_code < 500 or url.endswith("/detailed"), (method, url, params, body, response.text)
            if response.is_success:
                text = response.text
                leaked = [marker for marker in b_only if marker in text]
                assert not leaked, (method, url, params, body, leaked, text[:500])
        assert sent > 200

        # B's world is as it was: its message, its events, its hold, and no change sent to kumod touching its queues.
        after = (await client.get(f"/api/v1/messages/{b['message']}", headers=operator)).json()
        assert after["tenant_id"] == "beta" and after["status"] == b_message["status"]
        assert (await client.get(f"/api/v1/messages/{b['message']}/events", headers=operator)).json() == b_events
        assert b["hold"] in kumod.suspensions
        kept = await client.get(f"/api/v1/suppressions/{b['recipient']}", headers=operator)
        assert kept.status_code == 200 and kept.json()["tenant_id"] == "beta"
        for method, path, body in kumod.requests[changes_before:]:
            if method == "GET":
                continue
            assert (body or {}).get("id") != b["hold"], (method, path, body)
            family = "suspend" if "suspend" in path else "rebind" if "rebind" in path else "bounce"
            reached = [q for q in B_QUEUES if method == "POST" and kumod_rules.selects(family, body or {}, q)]
            assert reached == [], (method, path, json.dumps(body))
    assert copy.deepcopy(b) == b
