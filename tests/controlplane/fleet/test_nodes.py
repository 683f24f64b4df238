"""The fleet registry over HTTP and its health probe: credentials encrypted, never returned, used on the wire."""

from __future__ import annotations

import base64
import os

import pytest
import respx
from sqlalchemy import select

from adapters import http as node_http
from controlplane.db.tables import NodeRow
from controlplane.fleet.secrets import SecretBox, SecretBoxError
from controlplane.fleet.service import FleetService
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer

KEY = base64.b64encode(b"k" * 32).decode()
NODE = {
    "name": "kumo-1",
    "kind": "kumomta",
    "base_url": "http://kumo-1.test:8000/",
    "credentials": {"scheme": "bearer", "token": "kumod-s3cret"},
    "labels": {"region": "eu", "pool": "a"},
}


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


async def test_a_node_is_registered_with_its_credentials_encrypted_and_never_returned(services: Services) -> None:
    async with api(services.settings, secret_key=KEY) as client:
        admin = await bearer(services, "fleet:manage")
        created = await client.post("/api/v1/nodes", json=NODE, headers=admin)
        assert created.status_code == 201, created.text
        node = created.json()
        assert node["base_url"] == "http://kumo-1.test:8000" and node["auth_scheme"] == "bearer"
        assert "kumod-s3cret" not in created.text and "credentials" not in node
        listed = await client.get("/api/v1/nodes", headers=admin)
        assert "kumod-s3cret" not in listed.text and listed.json()[0]["labels"] == NODE["labels"]
        assert (await client.get(f"/api/v1/nodes/{node['id']}", headers=admin)).json()["name"] == "kumo-1"
        assert (await client.get("/api/v1/nodes/kumo-1", headers=admin)).json()["id"] == node["id"]
    async with services.sessions() as session:
        row = (await session.scalars(select(NodeRow))).one()
    assert row.credentials is not None and b"kumod-s3cret" not in row.credentials
    assert b"kumod-s3cret" in SecretBox(KEY).open(row.credentials, context=row.id.bytes)


async def test_registry_input_errors_name_the_field(services: Services) -> None:
    async with api(services.settings, secret_key=KEY) as client:
        admin = await bearer(services, "fleet:manage")
        assert (await client.post("/api/v1/nodes", json=NODE, headers=admin)).status_code == 201
        cases = [
            (NODE, 409, "name"),
            (NODE | {"name": "k2", "base_url": "http://user:pw@kumo.test"}, 400, "base_url"),
            (NODE | {"name": "k2", "kind": "postfix"}, 400, "kind"),
            (NODE | {"name": "bad name"}, 400, "name"),
            (NODE | {"name": "k2", "credentials": {"scheme": "basic", "username": "u"}}, 400, "credentials"),
        ]
        for body, status, field in cases:
            response = await client.post("/api/v1/nodes", json=body, headers=admin)
            assert (response.status_code, response.json()["field"]) == (status, field), (body, response.text)
        assert (await client.get("/api/v1/nodes", headers=await bearer(services, "email:read"))).status_code == 403
        assert (await client.get("/api/v1/nodes/nope", headers=admin)).status_code == 404


async def test_without_a_secret_key_credentials_are_refused_but_plain_nodes_register(services: Services) -> None:
    async with api(services.settings) as client:
        admin = await bearer(services, "fleet:manage")
        refused = await client.post("/api/v1/nodes", json=NODE, headers=admin)
        assert refused.status_code == 400 and refused.json()["field"] == "credentials"
        plain = await client.post("/api/v1/nodes", json=NODE | {"credentials": None}, headers=admin)
        assert plain.status_code == 201 and plain.json()["auth_scheme"] == "none"


async def test_nodes_are_updated_and_removed_and_every_change_is_audited(services: Services) -> None:
    async with api(services.settings, secret_key=KEY) as client:
        admin = await bearer(services, "fleet:manage")
        node = (await client.post("/api/v1/nodes", json=NODE, headers=admin)).json()
        changed = await client.patch(f"/api/v1/nodes/{node['id']}", json={"labels": {"region": "us"}}, headers=admin)
        assert changed.json()["labels"] == {"region": "us"}
        assert (await client.delete("/api/v1/nodes/kumo-1", headers=admin)).status_code == 200
        assert (await client.get("/api/v1/nodes", headers=admin)).json() == []
    actions = [e.action for e in await services.audit.recent(limit=10)]
    assert actions[:3] == ["node.delete", "node.update", "node.create"]


@respx.mock
async def test_probing_uses_the_stored_credentials_and_records_health(services: Services) -> None:
    fleet = FleetService(services.sessions, services.audit, SecretBox(KEY))
    import msgspec

    from controlplane.fleet.schema import NodeCreate

    await fleet.create(msgspec.convert(NODE, NodeCreate), actor="test")
    await fleet.create(
        msgspec.convert(
            NODE | {"name": "kumo-2", "base_url": "http://kumo-2.test:8000", "credentials": None}, NodeCreate
        ),
        actor="test",
    )
    up = respx.get("http://kumo-1.test:8000/api/check-liveness/v1").respond(200)
    respx.get("http://kumo-2.test:8000/api/check-liveness/v1").respond(503, text="load shedding")
    nodes = {n.name: n for n in await fleet.probe_all()}
    assert up.calls[0].request.headers["Authorization"] == "Bearer kumod-s3cret"
    assert nodes["kumo-1"].reachable and nodes["kumo-1"].last_seen_at is not None
    assert nodes["kumo-2"].reachable is False and nodes["kumo-2"].last_seen_at is None
    assert "load shedding" in (nodes["kumo-2"].health_detail or "")


@respx.mock
async def test_a_node_keeps_one_connection_between_uses_until_it_changes(services: Services) -> None:
    import msgspec

    from controlplane.fleet.schema import NodeCreate, NodeUpdate

    fleet = FleetService(services.sessions, services.audit, SecretBox(KEY))
    node = await fleet.create(msgspec.convert(NODE, NodeCreate), actor="test")
    route = respx.get("http://kumo-1.test:8000/api/check-liveness/v1").respond(200)
    (row,) = await fleet.select([node.name])
    for _ in range(2):
        adapter = fleet.adapter(row)
        await adapter.health()
        await adapter.close()  # the adapter goes; the node's client stays open for the next one
    assert fleet.adapter(row)._http is adapter._http and not adapter._http.is_closed  # type: ignore[attr-defined]
    assert route.call_count == 2
    await fleet.update(node.name, NodeUpdate(base_url="http://kumo-1b.test:8000"), actor="test")
    # A changed node gets a new client; the old one is closed once requests under way on it are done.
    assert fleet.adapter(row)._http is not adapter._http  # type: ignore[attr-defined]
    assert not adapter._http.is_closed  # type: ignore[attr-defined]
    await fleet.close()
    assert adapter._http.is_closed  # type: ignore[attr-defined]


def test_sealed_credentials_need_the_same_key_and_the_same_node() -> None:
    box = SecretBox(KEY)
    sealed = box.seal(b"secret", context=b"node-a")
    with pytest.raises(SecretBoxError):
        box.open(sealed, context=b"node-b")
    with pytest.raises(SecretBoxError):
        SecretBox(base64.b64encode(os.urandom(32)).decode()).open(sealed, context=b"node-a")
    with pytest.raises(SecretBoxError, match="32 bytes"):
        SecretBox(base64.b64encode(b"short").decode())


async def test_a_node_url_outside_the_allowed_networks_is_refused_at_registration(services: Services) -> None:
    async with api(services.settings, node_networks="10.0.0.0/8") as client:
        headers = await bearer(services, "fleet:manage")
        for field, url in (("base_url", "http://169.254.169.254"), ("tsa_url", "http://192.168.1.1:8008")):
            body = {"name": f"n-{field}", "kind": "kumomta", "base_url": "http://10.0.0.5:8000", field: url}
            response = await client.post("/api/v1/nodes", json=body, headers=headers)
            assert response.status_code == 400 and response.json()["field"] == field, response.text
        ok = {"name": "inside", "kind": "kumomta", "base_url": "http://10.0.0.5:8000"}
        assert (await client.post("/api/v1/nodes", json=ok, headers=headers)).status_code == 201
        moved = await client.patch("/api/v1/nodes/inside", json={"base_url": "http://127.0.0.1:8000"}, headers=headers)
        assert moved.status_code == 400 and moved.json()["field"] == "base_url"
