"""POST /api/v1/operations end to end against stand-in kumods: fan-out, per-node failures, refusals, dry runs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Awaitable, Callable

import httpx
import msgspec
import pytest
import respx

from adapters import http as node_http
from adapters.model import MessageQueueStatus
from controlplane.db.messages import insert_new
from controlplane.jobs.runner import run_worker
from controlplane.operations import service as operations_service
from controlplane.operations.schema import OperationRequest
from controlplane.operations.service import OperationService
from controlplane.services import Services
from tests.conftest import REDIS_URL
from tests.controlplane.api_client import api, bearer
from tests.fake_kumod import FakeKumod, register
from tests.support import make_message

KEY = base64.b64encode(b"o" * 32).decode()
SUSPEND = {
    "operation": "suspend",
    "reason": "block at gmail",
    "domain": "gmail.com",
    "tenant": "acme",
    "duration": "2h",
}


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


@respx.mock
async def test_suspend_then_resume_reaches_every_node_and_is_audited(services: Services) -> None:
    kumods = {name: FakeKumod() for name in ("kumo-1", "kumo-2")}
    for name, kumod in kumods.items():
        respx.route(host=f"{name}.test").mock(side_effect=kumod)
    async with services.sessions.begin() as session:
        await insert_new(session, [make_message(domain="gmail.com", tenant_id="acme") for _ in range(3)])
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1", "kumo-2")
        assert (await client.post("/api/v1/nodes/sync", headers=headers)).status_code == 200
        response = await client.post("/api/v1/operations", json=SUSPEND, headers=headers)
        assert response.status_code == 200, response.text
        record = response.json()
        assert record["status"] == "done" and record["total"]["affected_messages"] == 3
        assert record["total"]["affected_queues"] == ["acme@gmail.com"]
        assert sorted(n["node"] for n in record["nodes"]) == ["kumo-1", "kumo-2"]
        for outcome in record["nodes"]:  # each node's matching queues, as its last sync read them from /metrics
            assert outcome["reference"]
            assert outcome["result"]["affected_queues"] == ["spring-promo:acme@gmail.com"]
            assert outcome["result"]["affected_messages"] == 1843
        for kumod in kumods.values():
            assert [s["domain"] for s in kumod.suspensions.values()] == ["gmail.com"]
        resumed = await client.post("/api/v1/operations", json=SUSPEND | {"operation": "resume"}, headers=headers)
        assert resumed.json()["status"] == "done"
        assert all(k.suspensions == {} for k in kumods.values())
        listed = (await client.get("/api/v1/operations", headers=headers)).json()
        assert [o["request"]["operation"] for o in listed] == ["resume", "suspend"]
        one = (await client.get(f"/api/v1/operations/{record['id']}", headers=headers)).json()
        assert one["nodes"] == record["nodes"]
    audited = [e for e in await services.audit.recent(limit=20) if e.action.startswith("operation.")]
    assert [(e.action, e.reason, e.success) for e in audited] == [
        ("operation.resume", "block at gmail", True),
        ("operation.suspend", "block at gmail", True),
    ]


@respx.mock
async def test_an_unreachable_node_fails_alone_and_a_5xx_is_retried_boundedly(services: Services) -> None:
    healthy, sick = FakeKumod(), FakeKumod(fail_with=503)
    respx.route(host="kumo-1.test").mock(side_effect=healthy)
    respx.route(host="kumo-2.test").mock(side_effect=sick)
    respx.route(host="kumo-3.test").mock(side_effect=httpx.ConnectError("refused"))
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1", "kumo-2", "kumo-3")
        record = (await client.post("/api/v1/operations", json=SUSPEND, headers=headers)).json()
    assert record["status"] == "partial"
    outcome = {n["node"]: n["result"] for n in record["nodes"]}
    assert outcome["kumo-1"]["success"] and len(healthy.suspensions) == 1
    assert "503" in outcome["kumo-2"]["errors"][0] and len(sick.requests) == 3  # three tries, then given up
    assert "unreachable" in outcome["kumo-3"]["errors"][0]
    assert len(record["total"]["errors"]) == 2


@respx.mock
async def test_refusals_happen_before_any_node_is_contacted(services: Services) -> None:
    kumod = FakeKumod()
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1")
        cases = [
            (SUSPEND | {"operation": "set_priority", "metadata": {"priority": 9}}, 422, "operation"),
            ({"operation": "suspend", "reason": "one message", "message_ids": ["abc"]}, 422, "operation"),
            (SUSPEND | {"message_ids": ["abc"]}, 400, "message_ids"),
            ({"operation": "suspend", "reason": "everything?"}, 400, "domain"),
            (SUSPEND | {"operation": "rebind"}, 400, "metadata"),
            (SUSPEND | {"nodes": ["kumo-9"]}, 400, "nodes"),
            (SUSPEND | {"operation": "explode"}, 400, "operation"),
            (SUSPEND | {"duration": "soon"}, 400, "duration"),
            ({k: v for k, v in SUSPEND.items() if k != "reason"}, 400, "reason"),
        ]
        for body, status, field in cases:
            response = await client.post("/api/v1/operations", json=body, headers=headers)
            assert (response.status_code, response.json()["field"]) == (status, field), (body, response.text)
        for duration, says in [
            ("5parsecs", "'5parsecs' is not a duration: unknown unit 'parsecs' (use s, m, h, d or w;"),
            ("0s", "'0s' is zero: a hold that ends at once does nothing"),
            ("forever", "'forever' is not a duration: each part is a number and a unit"),
        ]:
            response = await client.post("/api/v1/operations", json=SUSPEND | {"duration": duration}, headers=headers)
            body = response.json()
            assert (response.status_code, body["error"], body["field"]) == (400, "invalid_input", "duration"), body
            assert body["message"].startswith(says) and "regex" not in body["message"], body
        assert (
            await client.post("/api/v1/operations", json=SUSPEND, headers=await bearer(services, "email:read"))
        ).status_code == 403
    assert kumod.requests == []


@respx.mock
async def test_a_dry_run_touches_no_mta_and_says_what_would_be_affected(services: Services) -> None:
    kumod = FakeKumod()
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with services.sessions.begin() as session:
        await insert_new(
            session,
            [
                make_message(domain="gmail.com", tenant_id="acme"),
                make_message(domain="gmail.com", tenant_id="acme", status=MessageQueueStatus.delivered),
            ],
        )
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1")
        record = (
            await client.post(
                "/api/v1/operations", json=SUSPEND | {"operation": "bounce", "dry_run": True}, headers=headers
            )
        ).json()
    assert record["status"] == "planned"
    assert record["total"]["affected_messages"] == 1  # the delivered one is past bouncing
    assert kumod.requests == []  # no node is contacted (not even for its counts: they come from its last sync)
    assert [(n["node"], n["result"]["affected_messages"]) for n in record["nodes"]] == [("kumo-1", 0)]


@respx.mock
async def test_a_dry_run_says_which_nodes_were_never_synced_or_failed_their_last_sync(services: Services) -> None:
    healthy, failing = FakeKumod({"acme@gmail.com": 25}), FakeKumod({"acme@gmail.com": 7})
    respx.route(host="kumo-1.test").mock(side_effect=healthy)
    respx.route(host="kumo-2.test").mock(side_effect=failing)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1", "kumo-2")
        dry = SUSPEND | {"dry_run": True}
        before = (await client.post("/api/v1/operations", json=dry, headers=headers)).json()
        assert (await client.post("/api/v1/nodes/sync", headers=headers)).status_code == 200
        failing.fail_with = 503
        assert (await client.post("/api/v1/nodes/sync", headers=headers)).status_code == 200
        after = (await client.post("/api/v1/operations", json=dry, headers=headers)).json()
    assert all(n["note"].startswith("never synced: what it holds is unknown") for n in before["nodes"])
    notes = {n["node"]: (n["result"]["affected_messages"], n.get("note")) for n in after["nodes"]}
    assert notes["kumo-1"] == (25, None)
    assert notes["kumo-2"][0] == 7 and notes["kumo-2"][1].startswith("its last sync failed (")
    assert "counts as of its last good sync" in notes["kumo-2"][1]


@respx.mock
async def test_bounce_cancel_purge_and_retry_use_the_right_kumod_calls(services: Services) -> None:
    kumod = FakeKumod()
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1")
        for operation in ("bounce", "cancel", "purge", "retry"):
            body = SUSPEND | {"operation": operation, "nodes": ["region=eu"]}
            assert (await client.post("/api/v1/operations", json=body, headers=headers)).json()["status"] == "done"
    posts = [(path, body) for method, path, body in kumod.requests if method == "POST"]
    assert [p for p, _ in posts] == ["/api/admin/bounce/v1"] * 3 + ["/api/admin/rebind/v1"]
    assert [b["suppress_logging"] for _, b in posts[:3]] == [False, False, True]
    assert posts[3][1]["always_flush"] is True and posts[3][1]["data"] == {}


def gated(kumod: FakeKumod, gate: asyncio.Event) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """A stand-in kumod that answers only once ``gate`` is set: a slow node, held as long as the test needs."""

    async def answer(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return kumod(request)

    return answer


async def until(predicate: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


@respx.mock
async def test_a_long_operation_answers_202_and_reports_progress_node_by_node(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations_service, "PROGRESS_EVERY_SECONDS", 0.0)
    fast, slow, gate = FakeKumod(), FakeKumod(), asyncio.Event()
    respx.route(host="kumo-1.test").mock(side_effect=fast)
    respx.route(host="kumo-2.test").mock(side_effect=gated(slow, gate))
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1", "kumo-2")
        response = await client.post("/api/v1/operations?wait=0.1", json=SUSPEND, headers=headers)
        assert response.status_code == 202, response.text
        running = response.json()
        assert running["status"] == "running" and running["progress"]["nodes_total"] == 2
        location = response.headers["Location"]
        assert location == f"/api/v1/operations/{running['id']}"

        async def fast_node_reported() -> bool:
            return (await client.get(location, headers=headers)).json()["progress"]["nodes_done"] == 1

        await until(fast_node_reported)
        partway = (await client.get(location, headers=headers)).json()
        assert partway["status"] == "running" and [n["node"] for n in partway["nodes"]] == ["kumo-1"]

        gate.set()

        async def finished() -> bool:
            return (await client.get(location, headers=headers)).json()["status"] == "done"

        await until(finished)
        done = (await client.get(location, headers=headers)).json()
        assert done["progress"] == {"nodes_total": 2, "nodes_done": 2} and done["finished_at"]
        assert (await client.post("/api/v1/operations?wait=99", json=SUSPEND, headers=headers)).status_code == 400
    assert len(fast.suspensions) == 1 and len(slow.suspensions) == 1


@respx.mock
async def test_with_redis_an_operation_runs_on_a_saq_worker(services: Services) -> None:
    kumod = FakeKumod()
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        await register(client, await bearer(services, "fleet:manage"), "kumo-1")
    on_saq = OperationService(services.sessions, services.audit, services.fleet, services.queues, redis_url=REDIS_URL)
    worker_services = dataclasses.replace(
        services, settings=msgspec.structs.replace(services.settings, redis_url=REDIS_URL), operations=on_saq
    )
    try:
        request = msgspec.convert(SUSPEND, OperationRequest)
        queued = await on_saq.submit(request, actor="test", wait=0.0)
        assert queued.status == "running" and kumod.requests == []  # enqueued, not run here
        await run_worker(worker_services, burst=True)
        done = await on_saq.get(queued.id)
        assert done.status == "done" and [n.node for n in done.nodes] == ["kumo-1"]
        assert len(kumod.suspensions) == 1
        await on_saq.execute(queued.id)  # a job delivered twice acts once
        assert len(kumod.suspensions) == 1
    finally:
        await on_saq.close()


@respx.mock
async def test_an_operation_cut_off_by_a_restart_is_marked_interrupted(services: Services) -> None:
    respx.route(host="kumo-1.test").mock(side_effect=gated(FakeKumod(), asyncio.Event()))
    async with api(services.settings, secret_key=KEY) as client:
        await register(client, await bearer(services, "fleet:manage"), "kumo-1")
    first_process = OperationService(services.sessions, services.audit, services.fleet, services.queues)
    record = await first_process.submit(msgspec.convert(SUSPEND, OperationRequest), actor="test", wait=0.0)
    await first_process.close()  # the process stops with the node still not answering
    assert await services.operations.mark_interrupted() == 1
    interrupted = await services.operations.get(record.id)
    assert interrupted.status == "interrupted" and interrupted.finished_at is not None
    audited = await services.audit.recent(limit=5)
    assert audited[0].action == "operation.suspend" and audited[0].success is False


@respx.mock
async def test_resume_can_name_the_one_suspension_to_lift(services: Services) -> None:
    kumod = FakeKumod()
    kumod.suspensions["s-1"] = {"id": "s-1", "domain": "gmail.com", "reason": "kcli"}
    kumod.suspensions["s-2"] = {"id": "s-2", "domain": "gmail.com", "reason": "kcli"}
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings, secret_key=KEY) as client:
        headers = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, headers, "kumo-1")
        body = {"operation": "resume", "reason": "done", "metadata": {"suspension_id": "s-2"}}
        record = (await client.post("/api/v1/operations", json=body, headers=headers)).json()
        assert record["status"] == "done" and record["nodes"][0]["reference"] == "s-2"
        bad = await client.post("/api/v1/operations", json=body | {"metadata": {"suspension_id": 7}}, headers=headers)
        assert (bad.status_code, bad.json()["field"]) == (400, "metadata")
    assert list(kumod.suspensions) == ["s-1"]


@respx.mock
async def test_an_operation_that_breaks_midway_is_recorded_failed_not_left_running(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    respx.route(host="kumo-1.test").mock(side_effect=FakeKumod())
    async with api(services.settings, secret_key=KEY) as client:
        await register(client, await bearer(services, "fleet:manage"), "kumo-1")

    async def database_gone(*_: object) -> None:
        raise ConnectionError("database went away")

    monkeypatch.setattr(operations_service, "record_effects", database_gone)
    record = await services.operations.submit(msgspec.convert(SUSPEND, OperationRequest), actor="test", wait=5.0)
    assert record.status == "failed" and record.finished_at is not None
    assert record.total is not None and "database went away" in (record.total.errors or [""])[-1]
