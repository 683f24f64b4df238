"""HTTP behaviour every route shares: OPTIONS and CORS, methods, error bodies, NUL bytes in input."""

from __future__ import annotations

from controlplane.services import Services
from controlplane.settings import Settings
from tests.controlplane.api_client import api, bearer

PREFLIGHT = {
    "Origin": "https://dash.example",
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}


async def test_options_on_an_authenticated_route_names_its_methods(services: Services) -> None:
    async with api(services.settings) as client:
        for path in ("/api/v1/queues", "/api/v1/nodes", "/api/v1/operations", "/api/v1/keys/someone"):
            answer = await client.options(path)
            assert answer.status_code == 204, (path, answer.text)
            assert "GET" in answer.headers["allow"] or "DELETE" in answer.headers["allow"]
            assert "access-control-allow-origin" not in answer.headers  # CORS is off by default


async def test_cors_is_off_by_default(services: Services) -> None:
    async with api(services.settings) as client:
        preflight = await client.options("/api/v1/queues", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers
        key = await bearer(services, "admin")
        listed = await client.get("/api/v1/queues", headers={**key, "Origin": "https://dash.example"})
        assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers


async def test_cors_preflight_and_requests_from_a_configured_origin(services: Services) -> None:
    async with api(services.settings, cors_origins=("https://dash.example",)) as client:
        preflight = await client.options("/api/v1/queues", headers=PREFLIGHT)
        assert preflight.status_code == 204, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://dash.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "GET" in preflight.headers["access-control-allow-methods"]
        key = await bearer(services, "admin")
        listed = await client.get("/api/v1/queues", headers={**key, "Origin": "https://dash.example"})
        assert listed.status_code == 200
        assert listed.headers["access-control-allow-origin"] == "https://dash.example"
        elsewhere = await client.options("/api/v1/queues", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert elsewhere.status_code == 400 and "access-control-allow-origin" not in elsewhere.headers


def test_cors_origins_are_read_comma_separated_from_the_environment() -> None:
    settings = Settings.from_env({"MTACTL_CORS_ORIGINS": "https://a.example, https://b.example"})
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert Settings.from_env({}).cors_origins == ()


async def test_a_405_names_the_allowed_methods(services: Services) -> None:
    async with api(services.settings) as client:
        answer = await client.put("/api/v1/nodes", headers=await bearer(services, "admin"))
        assert answer.status_code == 405 and answer.json()["error"] == "method_not_allowed"
        assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "POST"}


async def test_head_on_health(services: Services) -> None:
    async with api(services.settings) as client:
        live = await client.head("/api/v1/health")
        assert live.status_code == 200 and live.content == b""
        detailed = await client.head("/api/v1/health/detailed")
        assert detailed.status_code in (200, 503) and detailed.content == b""
        assert detailed.status_code == (await client.get("/api/v1/health/detailed")).status_code


async def test_a_missing_or_broken_body_is_a_400_naming_the_body(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "admin")
        for body in (b"", b"{", b"null", b"[]"):
            answer = await client.post(
                "/api/v1/nodes", content=body, headers={**key, "Content-Type": "application/json"}
            )
            assert answer.status_code == 400, body
            assert answer.json()["error"] == "invalid_input" and answer.json()["field"] == "body", answer.json()
            assert answer.json()["message"] != "'data'"
        unknown = await client.post("/api/v1/keys", json={"name": "a", "scopes": ["admin"], "colour": 1}, headers=key)
        assert unknown.status_code == 400 and unknown.json()["field"] == "colour"


NUL_INPUTS = [
    ("get", "/api/v1/messages", {"params": {"domain": "a\x00b"}}, "domain"),
    ("get", "/api/v1/messages", {"params": {"tags": ["ok", "x\x00"]}}, "tags"),
    ("get", "/api/v1/messages", {"params": {"search_query": "\x00"}}, "search_query"),
    ("get", "/api/v1/events", {"params": {"domain": "\x00"}}, "domain"),
    ("get", "/api/v1/events", {"params": {"cursor": "\x00"}}, "cursor"),
    ("get", "/api/v1/metrics/queues", {"params": {"campaign_id": "c\x00"}}, "campaign_id"),
    ("get", "/api/v1/nodes/a%00b", {}, "node"),
    ("delete", "/api/v1/keys/k%00", {}, "key_ref"),
    ("delete", "/api/v1/suspensions/s%00", {}, "hold_id"),
    ("delete", "/api/v1/bounces/b1", {"params": {"reason": "r\x00"}}, "reason"),
    ("post", "/api/v1/keys", {"json": {"name": "n\x00", "scopes": ["admin"]}}, "name"),
    ("post", "/api/v1/keys", {"json": {"name": "n", "scopes": ["admin"], "tenant_id": "t\x00"}}, "tenant_id"),
    (
        "post",
        "/api/v1/nodes",
        {"json": {"name": "n1", "kind": "kumomta", "base_url": "http://a", "labels": {"k": "v\x00"}}},
        "labels.k",
    ),
    (
        "post",
        "/api/v1/nodes",
        {"json": {"name": "n1", "kind": "kumomta", "base_url": "http://a", "labels": {"k\x00": "v"}}},
        "labels",
    ),
    (
        "post",
        "/api/v1/operations",
        {"json": {"operation": "suspend", "reason": "r", "domain": "d", "nodes": ["x", "\x00"]}},
        "nodes[1]",
    ),
    (
        "post",
        "/api/v1/operations",
        {"json": {"operation": "rebind", "reason": "r", "domain": "d", "metadata": {"data": {"t": "\x00"}}}},
        "metadata.data.t",
    ),
]


async def test_a_nul_in_any_api_input_is_a_400_naming_the_field_on_both_backends(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "admin")
        for method, path, kwargs, field in NUL_INPUTS:
            answer = await client.request(method.upper(), path, headers=key, **kwargs)
            assert answer.status_code == 400, (path, kwargs, answer.text)
            assert answer.json()["error"] == "invalid_input" and answer.json()["field"] == field, (path, answer.json())


async def test_an_ambiguous_key_reference_is_a_409(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "admin")
        for _ in range(2):
            await client.post("/api/v1/keys", json={"name": "twin", "scopes": ["email:read"]}, headers=key)
        answer = await client.delete("/api/v1/keys/twin", headers=key)
        assert answer.status_code == 409 and answer.json()["field"] == "key"


async def test_a_bad_body_field_named_like_a_dependency_is_a_400_not_a_500(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "admin")
        body = {"operation": "suspend", "reason": "r", "domain": "d.test", "tenant": "t" * 101}
        answer = await client.post("/api/v1/operations", json=body, headers=key)
        assert answer.status_code == 400 and answer.json()["field"] == "tenant", answer.text


async def test_a_node_url_must_be_one_an_http_client_can_parse(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "admin")
        for url in ("https://\u00ec\u00e2-", "http://a\x1cb", "http://[::1]:80"):
            node = {"name": "n1", "kind": "kumomta", "base_url": url}
            answer = await client.post("/api/v1/nodes", json=node, headers=key)
            assert answer.status_code == 400 and answer.json()["field"] == "base_url", (url, answer.text)


async def test_integer_filters_beyond_their_columns_are_a_400_on_both_backends(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        for name, value in (("max_attempts", 344300931690), ("min_attempts", 2**31), ("min_size_bytes", 2**63)):
            answer = await client.get("/api/v1/messages", params={name: value}, headers=key)
            assert answer.status_code == 400 and answer.json()["field"] == name, (name, answer.text)
        fits = await client.get("/api/v1/messages", params={"max_attempts": 2**31 - 1}, headers=key)
        assert fits.status_code == 200
