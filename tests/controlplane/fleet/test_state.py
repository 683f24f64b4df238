"""What the nodes hold, mirrored: queue counts and suspensions in GET /api/v1/queues, holds listed and lifted."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
import respx

from adapters import http as node_http
from controlplane.fleet.schema import NodeUpdate
from controlplane.jobs.tasks import sync_nodes
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.fake_kumod import FakeKumod, register
from tests.support import shared_fixture

KEY = base64.b64encode(b"s" * 32).decode()
SUSPEND = {"operation": "suspend", "reason": "block at gmail", "domain": "gmail.com", "tenant": "acme"}


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


def by_name(listing: dict[str, object]) -> dict[str, dict[str, object]]:
    return {q["queue_name"]: q for q in listing["data"]}  # type: ignore[attr-defined,index]


@respx.mock
async def test_a_suspended_domain_shows_in_queues_until_it_is_resumed(services: Services) -> None:
    kumods = {"kumo-1": FakeKumod({"acme@gmail.com": 40}), "kumo-2": FakeKumod({"acme@gmail.com": 2, "yahoo.com": 7})}
    for name, kumod in kumods.items():
        respx.route(host=f"{name}.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, *kumods)
        await sync_nodes(services, "test")
        queues = by_name((await client.get("/api/v1/queues", headers=headers)).json())
        gmail = queues["acme@gmail.com"]
        assert (gmail["queue_state"], gmail["scheduled"], gmail["total"]) == ("active", 42, 0)
        assert [(n["node"], n["scheduled"]) for n in gmail["nodes"]] == [("kumo-1", 40), ("kumo-2", 2)]

        suspended = (await client.post("/api/v1/operations", json=SUSPEND, headers=headers)).json()
        assert suspended["status"] == "done"
        queues = by_name((await client.get("/api/v1/queues", headers=headers)).json())
        assert queues["acme@gmail.com"]["queue_state"] == "suspended"  # at once, before any sync
        assert sorted(queues["acme@gmail.com"]["suspended_by"]) == sorted(n["reference"] for n in suspended["nodes"])
        assert queues["yahoo.com"]["queue_state"] == "active"

        await sync_nodes(services, "test")  # the nodes confirm it
        assert by_name((await client.get("/api/v1/queues", headers=headers)).json())["acme@gmail.com"][
            "queue_state"
        ] == ("suspended")

        resumed = await client.post("/api/v1/operations", json=SUSPEND | {"operation": "resume"}, headers=headers)
        assert resumed.json()["status"] == "done"
        gmail = by_name((await client.get("/api/v1/queues", headers=headers)).json())["acme@gmail.com"]
        assert (gmail["queue_state"], gmail["suspended_by"]) == ("active", [])
        await sync_nodes(services, "test")
        assert by_name((await client.get("/api/v1/queues", headers=headers)).json())["acme@gmail.com"][
            "queue_state"
        ] == ("active")
    assert all(k.suspensions == {} for k in kumods.values())


@respx.mock
async def test_holds_made_outside_mtactl_are_listed_and_can_be_lifted(services: Services) -> None:
    kumod = FakeKumod()
    kumod.suspensions["s-1"] = {"id": "s-1", "domain": "gmail.com", "tenant": None, "campaign": None, "reason": "kcli"}
    kumod.ready_suspensions["r-1"] = {
        "id": "r-1",
        "name": "ip-1->mx.gmail.com@smtp_client",
        "reason": "kcli",
        "duration": "1h",
    }
    kumod.ready["ip-1->mx.gmail.com@smtp_client"] = 12
    kumod.bounces["b-1"] = {"id": "b-1", "domain": "yahoo.com", "reason": "bad list", "total_bounced": 5}
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1")
        synced = (await client.post("/api/v1/nodes/sync", headers=headers)).json()
        assert [(s["node"], s["error"]) for s in synced] == [("kumo-1", None)]

        suspensions = (await client.get("/api/v1/suspensions", headers=headers)).json()
        assert sorted((s["id"], s["ready_queue"]) for s in suspensions) == [
            ("r-1", "ip-1->mx.gmail.com@smtp_client"),
            ("s-1", None),
        ]
        bounces = (await client.get("/api/v1/bounces", headers=headers)).json()
        assert [(b["id"], b["domain"], b["total_bounced"]) for b in bounces] == [("b-1", "yahoo.com", 5)]

        listing = (await client.get("/api/v1/queues", headers=headers)).json()
        assert by_name(listing)["spring-promo:acme@gmail.com"]["suspended_by"] == ["s-1"]
        assert by_name(listing)["acme@yahoo.com"]["bounced_by"] == ["b-1"]
        assert [(r["name"], r["ready"], r["queue_state"]) for r in listing["ready_queues"]] == [
            ("ip-1->mx.gmail.com@smtp_client", 12, "suspended")
        ]

        lifted = await client.delete("/api/v1/suspensions/r-1?reason=maintenance over", headers=headers)
        assert lifted.status_code == 200 and [h["node"] for h in lifted.json()] == ["kumo-1"]
        assert ("DELETE", "/api/admin/suspend-ready-q/v1", {"id": "r-1"}) in kumod.requests
        assert (await client.delete("/api/v1/bounces/b-1", headers=headers)).status_code == 200
        assert kumod.bounces == {} and "r-1" not in kumod.ready_suspensions
        assert [s["id"] for s in (await client.get("/api/v1/suspensions", headers=headers)).json()] == ["s-1"]
        assert (await client.get("/api/v1/bounces", headers=headers)).json() == []

        missing = await client.delete("/api/v1/suspensions/nope", headers=headers)
        assert (missing.status_code, missing.json()["field"]) == (404, "id")
        forbidden = await client.get("/api/v1/suspensions", headers=await bearer(services, "email:read"))
        assert forbidden.status_code == 403
    audited = [(e.action, e.target, e.reason) for e in await services.audit.recent(limit=20)]
    assert ("suspension.lift", "r-1", "maintenance over") in audited and ("bounce.lift", "b-1", None) in audited


@respx.mock
async def test_a_node_that_cannot_be_read_keeps_its_last_state_and_says_why(services: Services) -> None:
    kumod = FakeKumod({"acme@gmail.com": 9})
    route = respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        (node_id,) = await register(client, headers, "kumo-1")
        await sync_nodes(services, "test")
        route.mock(side_effect=httpx.ConnectError("refused"))
        await sync_nodes(services, "test")
        node = (await client.get(f"/api/v1/nodes/{node_id}", headers=headers)).json()
        assert "unreachable" in node["sync_error"] and node["last_synced_at"] is not None
        assert by_name((await client.get("/api/v1/queues", headers=headers)).json())["acme@gmail.com"]["scheduled"] == 9

        # Removing the node removes what was read from it.
        assert (await client.delete("/api/v1/nodes/kumo-1", headers=headers)).status_code == 200
        assert (await client.get("/api/v1/queues", headers=headers)).json()["data"] == []


@respx.mock
async def test_a_tenant_bound_key_sees_its_own_queues_and_no_egress_paths(services: Services) -> None:
    kumod = FakeKumod({"acme@gmail.com": 3, "globex@gmail.com": 4})
    kumod.ready["ip-1->mx.gmail.com@smtp_client"] = 1
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        await register(client, await bearer(services, "fleet:manage"), "kumo-1")
        await sync_nodes(services, "test")
        acme = await bearer(services, "email:read", tenant="acme")
        listing = (await client.get("/api/v1/queues", headers=acme)).json()
    assert [q["queue_name"] for q in listing["data"]] == ["acme@gmail.com"] and listing["ready_queues"] == []


@respx.mock
async def test_a_tenant_bound_key_sees_and_lifts_only_its_tenants_holds(services: Services) -> None:
    kumod = FakeKumod()
    kumod.suspensions["mine"] = {"id": "mine", "domain": "gmail.com", "tenant": "acme", "reason": "r"}
    kumod.suspensions["theirs"] = {"id": "theirs", "domain": "gmail.com", "tenant": "globex", "reason": "r"}
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        await register(client, await bearer(services, "fleet:manage"), "kumo-1")
        await sync_nodes(services, "test")
        acme = await bearer(services, "queue:manage", tenant="acme")
        assert [s["id"] for s in (await client.get("/api/v1/suspensions", headers=acme)).json()] == ["mine"]
        assert (await client.delete("/api/v1/suspensions/theirs", headers=acme)).status_code == 404
        assert (await client.delete("/api/v1/suspensions/mine", headers=acme)).status_code == 200
    assert list(kumod.suspensions) == ["theirs"]


@respx.mock
async def test_a_node_answering_nonsense_fails_alone_in_sync_and_in_operations(services: Services) -> None:
    healthy, confused = FakeKumod({"acme@gmail.com": 4}), FakeKumod(garbage=True)
    respx.route(host="kumo-1.test").mock(side_effect=healthy)
    respx.route(host="kumo-2.test").mock(side_effect=confused)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1", "kumo-2")
        synced = {s["node"]: s["error"] for s in (await client.post("/api/v1/nodes/sync", headers=headers)).json()}
        assert synced["kumo-1"] is None and "not Prometheus text" in synced["kumo-2"]
        record = (await client.post("/api/v1/operations", json=SUSPEND, headers=headers)).json()
    assert record["status"] == "partial"
    outcome = {n["node"]: n["result"] for n in record["nodes"]}
    assert outcome["kumo-1"]["success"] and outcome["kumo-1"]["affected_messages"] == 4
    assert "unexpected answer" in outcome["kumo-2"]["errors"][0]


@respx.mock
async def test_what_one_node_reports_cannot_fail_the_sync_of_the_others(services: Services) -> None:
    # Postgres text cannot hold NUL; a node reporting one must not cost the other nodes their sync.
    odd, fine = FakeKumod({"acme@gmail.com": 1}), FakeKumod({"acme@yahoo.com": 2})
    odd.suspensions["s-1"] = {"id": "s-1", "domain": "gmail.com", "reason": "nul \x00 here"}
    respx.route(host="kumo-1.test").mock(side_effect=odd)
    respx.route(host="kumo-2.test").mock(side_effect=fine)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1", "kumo-2")
        synced = {s["node"]: s["error"] for s in (await client.post("/api/v1/nodes/sync", headers=headers)).json()}
        assert synced["kumo-2"] is None
        if not services.settings.is_sqlite:  # SQLite stores the NUL; Postgres refuses it, for that node alone
            assert "could not store" in synced["kumo-1"]
        assert by_name((await client.get("/api/v1/queues", headers=headers)).json())["acme@yahoo.com"]["scheduled"] == 2


@respx.mock
async def test_tsa_suspensions_show_in_queues_and_cannot_be_lifted_through_kumod(services: Services) -> None:
    kumod = FakeKumod({"acme@gmail.com": 6})
    kumod.ready["ip-1->(mta5|mta6|mta7).am0.yahoodns.net@smtp_client"] = 3
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    respx.get("http://tsa-1.test:8008/get_suspension_v1/suspended.json").respond(
        200, content=shared_fixture("kumomta/tsa_suspended_response.json")
    )
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        node = {"name": "kumo-1", "kind": "kumomta", "base_url": "http://kumo-1.test:8000"}
        created = await client.post("/api/v1/nodes", json=node | {"tsa_url": "http://tsa-1.test:8008"}, headers=headers)
        assert created.json()["tsa_url"] == "http://tsa-1.test:8008"
        await sync_nodes(services, "test")
        listing = (await client.get("/api/v1/queues", headers=headers)).json()
        gmail = by_name(listing)["acme@gmail.com"]
        assert gmail["queue_state"] == "suspended" and gmail["suspended_by"][0].startswith("tsa:")
        assert [(r["ready"], r["queue_state"]) for r in listing["ready_queues"]] == [(3, "suspended")]
        refused = await client.delete(f"/api/v1/suspensions/{gmail['suspended_by'][0]}", headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (422, "unsupported_operation")
        resumed = await client.post("/api/v1/operations", json=SUSPEND | {"operation": "resume"}, headers=headers)
        assert resumed.json()["status"] == "done"  # nothing of kumod's to lift, and TSA's are left alone
    assert not any(method == "DELETE" for method, _, _ in kumod.requests)


async def test_changing_a_node_while_it_is_being_synced_does_not_cut_the_sync_off(services: Services) -> None:
    kumod = FakeKumod()
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow_kumod(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/admin/suspend/v1":  # the ready-queue listing is asked after this one
            reached.set()
            await release.wait()
        return kumod(request)

    with respx.mock:
        respx.route(host="kumo-1.test").mock(side_effect=slow_kumod)
        async with api(services.settings) as client:
            headers = await bearer(services, "fleet:manage")
            await register(client, headers, "kumo-1")
            sync = asyncio.create_task(services.fleet_state.sync())
            await reached.wait()
            await services.fleet.update("kumo-1", NodeUpdate(labels={"pool": "b"}), actor="test")
            release.set()
            [outcome] = await sync
    assert outcome.error is None, outcome.error
