from __future__ import annotations

import pytest
from sqlalchemy import select, update

from controlplane.auth.schema import Scope
from controlplane.db.tables import ApiKeyRow, AuditRow
from controlplane.errors import Conflict, InvalidInput
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer


async def test_a_key_is_stored_only_as_a_digest(services: Services) -> None:
    created = await services.keys.create(name="ops", scopes=["email:read", "queue:manage"], tenant_id="acme")
    assert created.key.startswith("mq_live_") and len(created.key) >= 48
    async with services.sessions() as session:
        row = (await session.scalars(select(ApiKeyRow))).one()
    assert created.key not in (row.key_hash, row.key_prefix) and created.key[8:] not in row.key_hash
    assert created.key.startswith(row.key_prefix)
    principal = await services.keys.authenticate(created.key)
    assert principal is not None and principal.tenant_id == "acme"
    assert principal.allows(Scope.email_read) and not principal.allows(Scope.admin)


async def test_admin_implies_every_scope(services: Services) -> None:
    principal = await services.keys.authenticate((await services.keys.create(name="root", scopes=["admin"])).key)
    assert principal is not None and all(principal.allows(scope) for scope in Scope)


async def test_unknown_scopes_are_refused(services: Services) -> None:
    with pytest.raises(InvalidInput) as refused:
        await services.keys.create(name="x", scopes=["email:read", "email:delete"])
    assert refused.value.field == "scopes" and "email:delete" in refused.value.message


async def test_revoking_by_name_stops_the_key_and_is_audited(services: Services) -> None:
    created = await services.keys.create(name="temp", scopes=["email:read"])
    await services.keys.revoke("temp")
    assert await services.keys.authenticate(created.key) is None
    async with services.sessions() as session:
        actions = (await session.scalars(select(AuditRow.action).order_by(AuditRow.id))).all()
    assert actions == ["api_key.create", "api_key.revoke"]


async def test_revoking_a_revoked_key_says_so_and_changes_nothing(services: Services) -> None:
    await services.keys.create(name="temp", scopes=["email:read"])
    first = await services.keys.revoke("temp")
    with pytest.raises(Conflict) as again:
        await services.keys.revoke("temp")
    assert (
        again.value.field == "key" and "'temp'" in again.value.message and "already revoked at" in again.value.message
    )
    assert (await services.keys.list())[0].revoked_at == first.revoked_at
    async with services.sessions() as session:
        actions = (await session.scalars(select(AuditRow.action).order_by(AuditRow.id))).all()
    assert actions == ["api_key.create", "api_key.revoke"]


async def test_revoking_a_revoked_key_over_http_is_a_409(services: Services) -> None:
    await services.keys.create(name="temp", scopes=["email:read"])
    async with api(services.settings) as client:
        headers = await bearer(services, "admin")
        assert (await client.delete("/api/v1/keys/temp", headers=headers)).status_code == 200
        again = await client.delete("/api/v1/keys/temp", headers=headers)
    assert again.status_code == 409
    assert (again.json()["error"], again.json()["field"]) == ("conflict", "key")
    assert "already revoked" in again.json()["message"]


async def test_keys_that_are_not_ours_are_rejected_without_a_lookup(services: Services) -> None:
    assert await services.keys.authenticate("sk_live_abc") is None
    assert await services.keys.authenticate("mq_live_" + "x" * 40) is None


async def test_a_key_seen_before_keeps_working_while_the_database_is_unreachable(services: Services) -> None:
    from controlplane.db.engine import create_engine, session_factory
    from controlplane.settings import Settings

    known = (await services.keys.create(name="mta", scopes=["events:ingest"])).key
    assert await services.keys.authenticate(known) is not None
    unreachable = create_engine(Settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"))
    healthy = services.keys._sessions
    services.keys._sessions = session_factory(unreachable)
    services.keys._cache = {k: (0.0, p) for k, (_, p) in services.keys._cache.items()}  # all expired
    try:
        principal = await services.keys.authenticate(known)
        assert principal is not None and principal.name == "mta"
        with pytest.raises(OSError):
            await services.keys.authenticate("mq_live_never_seen_before_000000000000000")
    finally:
        services.keys._sessions = healthy
        await unreachable.dispose()


async def test_keys_over_what_every_tenant_shares_are_never_tenant_bound(services: Services) -> None:
    for scope in ("admin", "fleet:manage"):
        with pytest.raises(InvalidInput) as refused:
            await services.keys.create(name="bound", scopes=[scope, "email:read"], tenant_id="acme")
        assert refused.value.field == "tenant_id"


async def test_a_tenant_bound_key_is_refused_on_fleet_wide_routes_whatever_its_scopes(services: Services) -> None:
    # A key bound before binding admin was refused (or made by hand in the database) gains nothing from it.
    created = await services.keys.create(name="old-admin", scopes=["email:read"], tenant_id="acme")
    async with services.sessions.begin() as session:
        await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == created.info.id).values(scopes=["admin"]))
    services.keys._cache.clear()
    headers = {"Authorization": f"Bearer {created.key}"}
    async with api(services.settings) as client:
        for method, path in (
            ("GET", "/api/v1/keys"),
            ("POST", "/api/v1/keys"),
            ("GET", "/api/v1/events/dead-letters"),
            ("GET", "/api/v1/nodes"),
            ("POST", "/api/v1/nodes/sync"),
        ):
            body = {"name": "minted", "scopes": ["admin"]} if method == "POST" else None
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (path, response.text)


async def test_a_key_seen_before_keeps_working_while_the_server_refuses_connections(services: Services) -> None:
    from controlplane.db.engine import create_engine, database_unavailable, session_factory
    from controlplane.settings import Settings
    from tests.pg_faults import RefusingPostgres

    known = (await services.keys.create(name="mta", scopes=["events:ingest"])).key
    assert await services.keys.authenticate(known) is not None
    healthy = services.keys._sessions
    async with RefusingPostgres("57P03", "the database system is shutting down") as server:
        refusing = create_engine(Settings(database_url=server.url))
        services.keys._sessions = session_factory(refusing)
        services.keys._cache = {k: (0.0, p) for k, (_, p) in services.keys._cache.items()}  # all expired
        try:
            principal = await services.keys.authenticate(known)
            assert principal is not None and principal.name == "mta"
            with pytest.raises(Exception) as unknown:
                await services.keys.authenticate("mq_live_never_seen_before_000000000000000")
            assert database_unavailable(unknown.value)
        finally:
            services.keys._sessions = healthy
            await refusing.dispose()
