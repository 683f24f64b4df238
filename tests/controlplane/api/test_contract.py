"""The OpenAPI document says what the server does: error bodies, security, constraints, the time rule."""

from __future__ import annotations

from typing import Any

from controlplane.app import create_app
from controlplane.instants import Instant
from controlplane.openapi import _mentions_instant, handler_parameters
from controlplane.services import Services
from controlplane.settings import Settings
from tests.controlplane.api_client import api, bearer

ERROR = {"$ref": "#/components/schemas/ErrorBody"}


async def document(services: Services) -> dict[str, Any]:
    async with api(services.settings) as client:
        answer = await client.get("/schema/openapi.json")
        assert answer.status_code == 200
        return answer.json()  # type: ignore[no-any-return]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]


def parameter(op: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in op["parameters"] if p["name"] == name)


async def test_every_error_status_is_documented_with_the_one_error_body(services: Services) -> None:
    doc = await document(services)
    body = doc["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "message", "field"}
    for path, method, op in operations(doc):
        responses = op["responses"]
        assert responses["400"]["content"]["application/json"]["schema"] == ERROR, (method, path)
        if not path.startswith("/api/v1/health"):
            for status in ("401", "403", "503"):
                assert responses[status]["content"]["application/json"]["schema"] == ERROR, (method, path, status)
        if "{" in path:
            assert responses["404"]["content"]["application/json"]["schema"] == ERROR, (method, path)
        for response in responses.values():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            assert "status_code" not in schema.get("properties", {}), (method, path)  # Litestar's own shape
    operation = doc["paths"]["/api/v1/operations"]["post"]["responses"]
    assert {"409", "422", "502"} <= set(operation)
    assert doc["paths"]["/api/v1/nodes"]["post"]["responses"]["409"]


async def test_the_error_body_is_what_errors_carry(services: Services) -> None:
    async with api(services.settings) as client:
        for answer in (
            await client.get("/api/v1/queues"),
            await client.get("/api/v1/messages?limit=0", headers=await bearer(services, "email:read")),
            await client.get("/api/v1/nodes", headers=await bearer(services, "email:read")),
            await client.get("/api/v1/nodes/nope", headers=await bearer(services, "admin")),
        ):
            assert set(answer.json()) == {"error", "message", "field"}, answer.json()


async def test_health_and_the_schema_need_no_key_and_say_so(services: Services) -> None:
    doc = await document(services)
    assert doc["security"] == [{"apiKey": []}]
    for method in ("get", "head"):
        assert doc["paths"]["/api/v1/health"][method]["security"] == []
        assert doc["paths"]["/api/v1/health/detailed"][method]["security"] == []
    assert "security" not in doc["paths"]["/api/v1/queues"]["get"]
    detailed = doc["paths"]["/api/v1/health/detailed"]["get"]["responses"]["503"]
    assert detailed["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/DetailedHealth"}


async def test_constraints_the_server_enforces_are_in_the_schema(services: Services) -> None:
    doc = await document(services)
    messages = doc["paths"]["/api/v1/messages"]["get"]
    for name in ("min_attempts", "max_attempts", "min_size_bytes", "max_size_bytes", "offset", "priority"):
        assert parameter(messages, name)["schema"]["minimum"] == 0, name
    assert parameter(messages, "max_attempts")["schema"]["maximum"] == 2**31 - 1  # an INTEGER column
    assert parameter(messages, "max_size_bytes")["schema"]["maximum"] == 2**63 - 1  # a BIGINT column
    assert parameter(doc["paths"]["/api/v1/operations"]["post"], "wait")["schema"]["minimum"] == 0
    for path in ("/api/v1/messages/{message_id}", "/api/v1/messages/{message_id}/events"):
        assert parameter(doc["paths"][path]["get"], "message_id")["schema"]["format"] == "uuid"
    assert parameter(doc["paths"]["/api/v1/operations/{operation_id}"]["get"], "operation_id")["schema"] == {
        "type": "string",
        "format": "uuid",
    }
    schemas = doc["components"]["schemas"]
    for name in ("NodeCreate", "NodeUpdate", "NodeCredentials", "ApiKeyCreate", "OperationRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    labels = schemas["NodeCreate"]["properties"]["labels"]
    assert labels["maxProperties"] == 20 and labels["additionalProperties"]["maxLength"] == 100
    targets = schemas["OperationRequest"]["anyOf"]
    assert {"domain", "tenant", "campaign", "routing_domain", "queue_name"} <= {t["required"][0] for t in targets}
    types = parameter(doc["paths"]["/api/v1/events"]["get"], "type")["schema"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/RecordType"}} in types["oneOf"]
    assert {"Delivery", "Bounce", "TransientFailure", "Reception"} <= set(schemas["RecordType"]["enum"])


async def test_every_time_filter_follows_one_rule_and_says_so(services: Services) -> None:
    doc = await document(services)
    filters = [("/api/v1/events", n) for n in ("since", "until")] + [
        ("/api/v1/messages", n) for n in ("created_after", "created_before", "scheduled_after", "scheduled_before")
    ]
    for path, name in filters:
        schema = parameter(doc["paths"][path]["get"], name)["schema"]
        assert schema["anyOf"] == [{"format": "date-time"}, {"format": "date"}], (path, name)
        assert "UTC when it has no offset" in schema["description"]
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        for path, name in filters:
            for refused in ("0.5", "1700000000", "2025-02-30", "yesterday", "2025-W01-1"):
                answer = await client.get(path, params={name: refused}, headers=key)
                assert answer.status_code == 400 and answer.json()["field"] == name, (path, name, refused)
            for accepted in ("2025-01-01", "2025-01-01T10:00", "2025-01-01T10:00:00Z", "2025-01-01T10:00:00.5+02:00"):
                answer = await client.get(path, params={name: accepted}, headers=key)
                assert answer.status_code == 200, (path, name, accepted, answer.text)


def test_no_query_parameter_is_a_plain_datetime(services: Services) -> None:
    """New time filters must use Instant, or they would escape the rule (msgspec reads "0.5" as a Unix time)."""
    from datetime import datetime

    app = create_app(Settings(database_url=services.settings.database_url), run_jobs=False)
    for route, _, name, field in handler_parameters(app):
        plain = field.annotation is datetime or any(i.annotation is datetime for i in field.inner_types)
        assert not plain or _mentions_instant(field), (route.path, name)
    assert issubclass(Instant, datetime)


async def test_an_unknown_record_type_in_the_events_filter_is_a_400(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        wrong = await client.get("/api/v1/events?type=delivery", headers=key)
        assert wrong.status_code == 400 and wrong.json()["field"] == "type"
        right = await client.get("/api/v1/events?type=Delivery&type=Bounce", headers=key)
        assert right.status_code == 200


async def test_a_malformed_id_in_the_path_is_a_400_naming_it(services: Services) -> None:
    async with api(services.settings) as client:
        key = await bearer(services, "admin")
        for path, field in (
            ("/api/v1/messages/0", "message_id"),
            ("/api/v1/messages/0/events", "message_id"),
            ("/api/v1/operations/0", "operation_id"),
        ):
            answer = await client.get(path, headers=key)
            assert answer.status_code == 400 and answer.json()["field"] == field, (path, answer.json())


async def test_every_listing_refuses_a_query_parameter_it_does_not_describe(services: Services) -> None:
    """A misspelt filter must not be ignored: the result would silently widen (a listing, an export)."""
    doc = await document(services)
    checked = []
    async with api(services.settings) as client:
        admin = await bearer(services, "admin")
        for path, method, op in operations(doc):
            described = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            if method != "get" or not path.startswith("/api/v1/") or "{" in path or not described:
                continue
            answer = await client.get(path, params={"no_such_filter": "1"}, headers=admin)
            assert (answer.status_code, answer.json()["field"]) == (400, "no_such_filter"), (path, answer.text)
            checked.append(path)
        assert (await client.get("/api/v1/health", params={"_": "1"})).status_code == 200  # nothing to widen
    assert {"/api/v1/messages", "/api/v1/suppressions", "/api/v1/domains", "/api/v1/events"} <= set(checked)
