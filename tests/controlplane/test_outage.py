"""What clients get while the database is away: the REST API a clear 503, ingestion never a non-2xx.

The service runs on the test database through ``PostgresProxy``, which cuts and refuses connections the way a
stopping or stopped server does; the shared server itself is never stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.pg_faults import PostgresProxy


@pytest.fixture
async def proxy(services: Services) -> AsyncIterator[PostgresProxy]:
    if services.settings.is_sqlite:
        pytest.skip("the proxy stands between the service and a Postgres server")
    url = make_url(services.settings.database_url)
    async with PostgresProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def proxied(services: Services, proxy: PostgresProxy) -> dict[str, Any]:
    return {"database_url": proxy.url_to(make_url(services.settings.database_url).database or "")}


def assert_database_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "database_unavailable" and body["field"] is None and body["message"]
    assert int(response.headers["retry-after"]) > 0


@pytest.mark.parametrize("mode", ["57P03", "refused"])
async def test_the_rest_api_answers_503_database_unavailable_while_the_database_is_away(
    services: Services, proxy: PostgresProxy, mode: str
) -> None:
    key = await bearer(services, "email:read", "analytics:read")
    async with api(services.settings, **proxied(services, proxy)) as client:
        assert (await client.get("/api/v1/messages", headers=key)).status_code == 200
        await proxy.down(mode)
        for path in ("/api/v1/messages", "/api/v1/metrics/queues", "/api/v1/events"):
            assert_database_unavailable(await client.get(path, headers=key))
        await proxy.up()
        assert (await client.get("/api/v1/messages", headers=key)).status_code == 200
