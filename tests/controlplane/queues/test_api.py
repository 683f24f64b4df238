"""The queue API over HTTP: auth, tenant isolation, parameters, errors, feature flags, OpenAPI."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from adapters.model import MessageQueueItem, MessageQueueStatus
from controlplane.db.messages import insert_new
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.support import BASE_TIME, make_message


async def store(services: Services, *messages: MessageQueueItem) -> None:
    async with services.sessions.begin() as session:
        await insert_new(session, list(messages))


async def test_listing_needs_a_key_with_email_read(services: Services) -> None:
    async with api(services.settings) as client:
        missing = await client.get("/api/v1/messages")
        assert missing.status_code == 401 and missing.json()["field"] == "Authorization"
        bogus = await client.get("/api/v1/messages", headers={"Authorization": "Bearer mq_live_nope"})
        assert bogus.status_code == 401
        wrong_scope = await client.get("/api/v1/messages", headers=await bearer(services, "events:ingest"))
        assert wrong_scope.status_code == 403 and wrong_scope.json()["error"] == "forbidden"
        reader = await client.get("/api/v1/messages", headers=await bearer(services, "email:read"))
        assert reader.status_code == 200 and reader.json() == {"data": [], "cursor": None, "has_more": False}
        admin = await client.get("/api/v1/messages", headers=await bearer(services, "admin"))
        assert admin.status_code == 200


async def test_a_revoked_key_is_refused_at_once(services: Services) -> None:
    async with api(services.settings) as client:
        admin = await bearer(services, "admin")
        created = (
            await client.post("/api/v1/keys", json={"name": "temp", "scopes": ["email:read"]}, headers=admin)
        ).json()
        key = {"Authorization": f"Bearer {created['key']}"}
        assert (await client.get("/api/v1/messages", headers=key)).status_code == 200
        revoked = await client.delete(f"/api/v1/keys/{created['info']['id']}", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert (await client.get("/api/v1/messages", headers=key)).status_code == 401


async def test_a_tenant_bound_key_sees_only_its_tenant(services: Services) -> None:
    mine, theirs = make_message(tenant_id="acme"), make_message(tenant_id="globex", domain="globex.test")
    await store(services, mine, theirs)
    async with api(services.settings) as client:
        acme = await bearer(services, "email:read", tenant="acme")
        listed = (await client.get("/api/v1/messages", headers=acme)).json()["data"]
        assert [m["id"] for m in listed] == [str(mine.id)]
        assert (await client.get(f"/api/v1/messages/{theirs.id}", headers=acme)).status_code == 404
        assert (await client.get(f"/api/v1/messages/{mine.id}", headers=acme)).status_code == 200
        other = await client.get("/api/v1/messages?tenant_id=globex", headers=acme)
        assert other.status_code == 403 and other.json()["field"] == "tenant_id"
        queues = (await client.get("/api/v1/queues", headers=acme)).json()["data"]
        assert [q["queue_name"] for q in queues] == ["acme@example.com"]
        metrics = (await client.get("/api/v1/metrics/queues", headers=acme)).json()
        assert metrics["total_messages"] == 1
        unbound = await bearer(services, "email:read")
        assert len((await client.get("/api/v1/messages", headers=unbound)).json()["data"]) == 2


async def test_filters_arrive_as_query_parameters_with_lists_repeated(services: Services) -> None:
    bounced = make_message(status=MessageQueueStatus.bounced, tags=["a", "b"])
    expired = make_message(status=MessageQueueStatus.expired)
    await store(services, bounced, expired, make_message())
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        both = (await client.get("/api/v1/messages?status=bounced&status=expired", headers=key)).json()["data"]
        assert {m["id"] for m in both} == {str(bounced.id), str(expired.id)}
        tagged = (await client.get("/api/v1/messages?tags=a&tags=b", headers=key)).json()["data"]
        assert [m["id"] for m in tagged] == [str(bounced.id)]
        after = (BASE_TIME + timedelta(days=400)).isoformat()
        assert (await client.get("/api/v1/messages", params={"created_after": after}, headers=key)).json()["data"] == []


async def test_cursor_paging_over_http(services: Services) -> None:
    await store(services, *[make_message() for _ in range(5)])
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        first = (await client.get("/api/v1/messages?limit=3&sort_by=size_bytes&sort_order=asc", headers=key)).json()
        assert first["has_more"] and first["cursor"]
        second = (
            await client.get(
                "/api/v1/messages",
                params={"limit": 3, "sort_by": "size_bytes", "sort_order": "asc", "cursor": first["cursor"]},
                headers=key,
            )
        ).json()
        assert not second["has_more"] and second["cursor"] is None
        sizes = [m["size_bytes"] for m in first["data"] + second["data"]]
        assert sizes == sorted(sizes) and len(sizes) == 5


async def test_queues_come_a_page_at_a_time_over_http(services: Services) -> None:
    await store(services, *[make_message(domain=d, tenant_id="acme") for d in ("a.test", "b.test", "c.test")])
    await store(services, make_message(domain="b.test", tenant_id="beta"))
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        first = (await client.get("/api/v1/queues?limit=2", headers=key)).json()
        assert set(first) == {"data", "ready_queues", "cursor", "has_more"} and first["has_more"]
        second = (
            await client.get("/api/v1/queues", params={"limit": 2, "cursor": first["cursor"]}, headers=key)
        ).json()
        assert (second["has_more"], second["cursor"]) == (False, None)
        listed = [q["queue_name"] for q in first["data"] + second["data"]]
        assert listed == ["acme@a.test", "acme@b.test", "acme@c.test", "beta@b.test"]
        assert len((await client.get("/api/v1/queues", headers=key)).json()["data"]) == 4  # 100 by default
        acme = (await client.get("/api/v1/queues?tenant_id=acme&limit=1", headers=key)).json()
        assert [q["queue_name"] for q in acme["data"]] == ["acme@a.test"] and acme["has_more"]
        bound = await bearer(services, "email:read", tenant="beta")
        assert [q["queue_name"] for q in (await client.get("/api/v1/queues", headers=bound)).json()["data"]] == [
            "beta@b.test"
        ]
        other = await client.get("/api/v1/queues?tenant_id=acme", headers=bound)
        assert other.status_code == 403 and other.json()["field"] == "tenant_id"


async def assert_each_refused_naming_its_field(
    client: Any, key: dict[str, str], path: str, cases: dict[str, str]
) -> None:
    """Each query string of ``cases`` is a 400 whose ``field`` is the one it maps to."""
    for query, field in cases.items():
        response = await client.get(f"{path}?{query}", headers=key)
        assert response.status_code == 400, (query, response.text)
        assert response.json()["field"] == field, (query, response.json())


async def test_bad_queue_paging_input_is_a_400_naming_the_field(services: Services) -> None:
    cases = {
        "limit=0": "limit",
        "limit=1001": "limit",
        "limit=many": "limit",
        "cursor=!!!": "cursor",
        "cursor=WyJhIiwiYiJd": "cursor",  # ["a","b"]: not a cursor of this listing
        "page=2": "page",
        "tenant_id=": "tenant_id",
    }
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        await assert_each_refused_naming_its_field(client, key, "/api/v1/queues", cases)


async def test_bad_input_is_a_400_naming_the_field_never_a_500(services: Services) -> None:
    cases = {
        "status=bogus": "status",
        "limit=0": "limit",
        "limit=1001": "limit",
        "priority=11": "priority",
        "min_attempts=-1": "min_attempts",
        "created_after=yesterday": "created_after",
        "sort_by=subject": "sort_by",
        "sort_order=sideways": "sort_order",
        "cursor=!!!": "cursor",
        "bounce_type=squishy": "bounce_type",
        "stauts=ready": "stauts",
        "offset=999999": "offset",
    }
    async with api(services.settings) as client:
        key = await bearer(services, "email:read")
        await assert_each_refused_naming_its_field(client, key, "/api/v1/messages", cases)
        bad_id = await client.get("/api/v1/messages/not-a-uuid", headers=key)
        assert (
            bad_id.status_code == 400 and bad_id.json()["field"] == "message_id"
        )  # the path parameter, as the schema names it
        for inverted in ("created_after=2026-01-02&created_before=2026-01-01", "min_attempts=5&max_attempts=2"):
            empty = await client.get(f"/api/v1/messages?{inverted}", headers=key)  # an empty range, not an error
            assert empty.status_code == 200 and empty.json()["data"] == [], inverted
        unknown = await client.get("/api/v1/messages/6c3a1f1e-0000-4000-8000-000000000000", headers=key)
        assert unknown.status_code == 404


async def test_health_is_open_and_detailed_health_reports_the_database(services: Services) -> None:
    async with api(services.settings) as client:
        assert (await client.get("/api/v1/health")).json()["status"] == "ok"
        detailed = (await client.get("/api/v1/health/detailed")).json()
        assert detailed["database"]["status"] == "ok"
        assert detailed["redis"]["status"] == "not_configured"
        assert detailed["jobs"][0]["status"] == "never_ran"  # jobs are off in this app


async def test_the_openapi_schema_types_every_endpoint(services: Services) -> None:
    async with api(services.settings) as client:
        spec = (await client.get("/schema/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/api/v1/messages",
        "/api/v1/messages/{message_id}",
        "/api/v1/queues",
        "/api/v1/metrics/queues",
        "/api/v1/health",
        "/api/v1/health/detailed",
        "/api/v1/keys",
    ):
        assert path in paths, path
    parameters = {p["name"] for p in paths["/api/v1/messages"]["get"]["parameters"]}
    assert {"status", "domains", "search_query", "tags", "cursor", "sort_by", "limit"} <= parameters
    schemas = spec["components"]["schemas"]
    assert {"MessagePage", "MessageQueueItem", "QueueMetrics"} <= set(schemas)
    queue_parameters = {p["name"] for p in paths["/api/v1/queues"]["get"]["parameters"]}
    assert {"limit", "cursor", "tenant_id"} <= queue_parameters
    assert {"data", "cursor", "has_more"} <= set(schemas["QueueList"]["required"])
    assert len(schemas["MessageQueueItem"]["properties"]) == 31
    assert "/api/v1/legacy/queue-items" not in paths  # the legacy adapter is off by default


async def test_the_legacy_adapter_is_served_only_when_its_flag_is_on(services: Services) -> None:
    message = make_message(status=MessageQueueStatus.in_delivery, tenant_id="acme")
    await store(services, message)
    key = await bearer(services, "email:read")
    async with api(services.settings) as client:
        assert (await client.get("/api/v1/legacy/queue-items", headers=key)).status_code == 404
    async with api(services.settings, enable_legacy_queue_adapter=True) as client:
        items = (await client.get("/api/v1/legacy/queue-items?tenant_id=acme", headers=key)).json()["data"]
        assert items[0]["status"] == "in-progress" and items[0]["customerId"] == "acme"
        assert (await client.get("/api/v1/messages", headers=key)).json()["data"][0]["status"] == "in_delivery"


async def test_with_the_new_model_off_the_api_speaks_only_the_legacy_shape(services: Services) -> None:
    await store(services, make_message(status=MessageQueueStatus.ready))
    key = await bearer(services, "email:read")
    async with api(services.settings, enable_email_queue_model=False) as client:
        item = (await client.get("/api/v1/messages", headers=key)).json()["data"][0]
        assert item["status"] == "waiting" and "customerEmail" in item and "recipient" not in item
        metrics = (await client.get("/api/v1/metrics/queues", headers=key)).json()
        assert metrics["totalWaiting"] == 1 and "total_messages" not in metrics


async def test_a_body_missing_a_field_names_that_field(services: Services) -> None:
    async with api(services.settings) as client:
        response = await client.post(
            "/api/v1/keys", json={"scopes": ["admin"]}, headers=await bearer(services, "admin")
        )
    assert response.status_code == 400 and response.json()["field"] == "name"


def test_mta_errors_map_to_http_in_the_one_handler() -> None:
    from adapters.base import MtaAuthRefused, MtaBadAnswer, MtaRefused, MtaUnreachable, UnsupportedOperation
    from controlplane.errors import handle_mta_error

    cases = [
        (UnsupportedOperation("no priority on kumomta"), 422, "operation", "unsupported_operation"),
        (MtaUnreachable("node-1 unreachable"), 503, "nodes", "mta_unreachable"),
        (MtaRefused("node-1: 500", status=500), 502, "nodes", "mta_refused"),
        (MtaAuthRefused("node-1 refused"), 502, "nodes", "mta_auth_refused"),
        (MtaBadAnswer("node-1: not JSON"), 502, "nodes", "mta_bad_answer"),
    ]
    for error, status, field, code in cases:
        response = handle_mta_error(None, error)  # type: ignore[arg-type]
        assert (response.status_code, response.content.field, response.content.error) == (status, field, code)
        assert response.content.message == error.message
