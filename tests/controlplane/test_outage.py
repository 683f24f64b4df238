"""What clients get while the database is away: the REST API a clear 503, ingestion never a non-2xx.

The service runs on the test database through ``PostgresProxy``, which cuts and refuses connections the way a
stopping or stopped server does; the shared server itself is never stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy.engine import make_url

from controlplane.auth.service import ApiKeyService, VerifiedKeys, digest
from controlplane.db.engine import create_engine, database_unavailable, session_factory
from controlplane.services import Services
from controlplane.settings import Settings
from tests.controlplane.api_client import api, bearer, served
from tests.pg_faults import PostgresProxy, RefusingPostgres
from tests.support import kumomta_records


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


async def test_a_key_first_seen_while_the_database_is_away_gets_503_from_the_rest_api(
    services: Services, proxy: PostgresProxy
) -> None:
    key = await bearer(services, "email:read")  # created, never used: the service has not verified it
    async with api(services.settings, **proxied(services, proxy)) as client:
        await proxy.down("57P03")
        assert_database_unavailable(await client.get("/api/v1/messages", headers=key))
        await proxy.up()
        assert (await client.get("/api/v1/messages", headers=key)).status_code == 200


async def test_an_ingest_key_first_seen_while_the_database_is_away_is_held_then_the_connection_closed(
    services: Services, proxy: PostgresProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controlplane.auth.guard.HOLD_LIMIT_SECONDS", 1.0)
    key = await bearer(services, "events:ingest")
    body = kumomta_records()["log_delivery"]
    settings = Settings(**{**msgspec.structs.asdict(services.settings), **proxied(services, proxy)})
    async with served(settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        await proxy.down("refused")
        started = time.monotonic()
        # No reply at all, not a 5xx that kumod would take as final: its client sees a network error and retries.
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/api/v1/events/ingest/kumomta", content=body, headers=key)
        assert 1.0 <= time.monotonic() - started < 10
        # Held while the database comes back, the same request is checked and accepted.
        held = asyncio.create_task(client.post("/api/v1/events/ingest/kumomta", content=body, headers=key))
        await asyncio.sleep(0.4)
        await proxy.up()
        response = await held
    assert response.status_code == 202 and response.json()["accepted"] + response.json()["duplicates"] == 1


async def test_ingest_keys_verified_before_a_restart_are_known_while_the_database_is_away(
    services: Services, tmp_path: Path
) -> None:
    store = tmp_path / "verified-keys.json"
    ingest = (await services.keys.create(name="mta", scopes=["events:ingest"])).key
    reader = (await services.keys.create(name="reader", scopes=["email:read"])).key
    before = ApiKeyService(services.sessions, services.audit, VerifiedKeys(store))
    assert await before.authenticate(ingest) is not None and await before.authenticate(reader) is not None
    async with RefusingPostgres("57P03") as server:
        refusing = create_engine(Settings(database_url=server.url))
        try:
            after = ApiKeyService(session_factory(refusing), services.audit, VerifiedKeys(store))  # a new process
            principal = await after.authenticate(ingest)
            assert principal is not None and principal.name == "mta"
            with pytest.raises(Exception) as unknown:  # only ingest keys are remembered: the rest needs the database
                await after.authenticate(reader)
            assert database_unavailable(unknown.value)
        finally:
            await refusing.dispose()
    assert ingest not in store.read_text()  # digests only, as in the database
    await ApiKeyService(services.sessions, services.audit, VerifiedKeys(store)).revoke("mta")
    assert VerifiedKeys(store).get(digest(ingest)) is None
