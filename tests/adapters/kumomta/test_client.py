"""The KumoMTA adapter against kumod's real admin API: request bodies exactly as kumod expects, responses parsed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from adapters import http as node_http
from adapters.base import (
    MtaAuthRefused,
    MtaBadAnswer,
    MtaRefused,
    MtaUnreachable,
    Target,
    TargetNotExpressible,
    UnsupportedOperation,
)
from adapters.driver import NodeConfig
from adapters.http import NodeAuth
from adapters.kumomta.client import KumoMtaClient
from adapters.registry import driver_for
from tests.support import shared_fixture

BASE = "http://kumod.test:8000"


def fixture(name: str) -> Any:
    return json.loads(shared_fixture(f"kumomta/{name}.json"))


def sent_json(route: respx.Route, call: int = -1) -> Any:
    return json.loads(route.calls[call].request.content)


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


@pytest.fixture
async def kumod() -> Any:
    adapter = KumoMtaClient(BASE, node="node-1")
    yield adapter
    await adapter.close()


@respx.mock
async def test_suspend_posts_the_suspend_request_and_keeps_the_returned_id(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/suspend/v1").respond(200, json=fixture("suspend_response"))
    request = fixture("suspend_request")
    ident = await kumod.suspend(
        Target(domain="gmail.com", tenant="acme", campaign="spring-promo"), reason=request["reason"], duration="2h"
    )
    assert ident == fixture("suspend_response")["id"]
    assert sent_json(route) == request


@respx.mock
async def test_queue_names_are_sent_alone(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/suspend/v1").respond(200, json=fixture("suspend_response"))
    names = fixture("suspend_request_queue_names")["queue_names"]
    await kumod.suspend(Target(queue_names=tuple(names)), reason="maintenance on tenant acme")
    assert sent_json(route) == {"queue_names": names, "reason": "maintenance on tenant acme"}


@respx.mock
async def test_criteria_beside_queue_names_are_refused_because_kumod_would_ignore_them(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/suspend/v1").respond(200, json=fixture("suspend_response"))
    with pytest.raises(TargetNotExpressible):
        await kumod.suspend(Target(domain="ignored.com", queue_names=("acme@yahoo.com",)), reason="r")
    assert route.call_count == 0


@respx.mock
async def test_a_field_the_request_lacks_is_refused_before_anything_is_sent(kumod: KumoMtaClient) -> None:
    suspend = respx.post(f"{BASE}/api/admin/suspend/v1").respond(200, json=fixture("suspend_response"))
    rebind = respx.post(f"{BASE}/api/admin/rebind/v1").respond(200, json={})
    with pytest.raises(TargetNotExpressible) as refused:
        await kumod.suspend(Target(routing_domain="relay.example"), reason="r")
    assert refused.value.field == "routing_domain"
    with pytest.raises(TargetNotExpressible):
        await kumod.retry(Target(queue_names=("acme@gmail.com",)), reason="r")
    assert suspend.call_count == rebind.call_count == 0


@respx.mock
async def test_resume_deletes_the_suspension_by_id_on_the_right_resource(kumod: KumoMtaClient) -> None:
    respx.get(f"{BASE}/api/admin/suspend-ready-q/v1").respond(200, json=fixture("suspend_ready_q_list_response"))
    scheduled = respx.delete(f"{BASE}/api/admin/suspend/v1").respond(200)
    ready = respx.delete(f"{BASE}/api/admin/suspend-ready-q/v1").respond(200)
    await kumod.resume(fixture("suspend_cancel_request")["id"])
    assert sent_json(scheduled) == fixture("suspend_cancel_request")
    ready_id = fixture("suspend_ready_q_list_response")[0]["id"]
    await kumod.resume(ready_id)
    assert sent_json(ready) == {"id": ready_id}


@respx.mock
async def test_a_ready_queue_suspension_posts_its_request(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/suspend-ready-q/v1").respond(200, json=fixture("suspend_ready_q_response"))
    request = fixture("suspend_ready_q_request")
    assert await kumod.suspend_ready_queue(request["name"], reason=request["reason"], duration="30m")
    assert sent_json(route) == request


@respx.mock
async def test_suspensions_of_both_kinds_are_listed(kumod: KumoMtaClient) -> None:
    respx.get(f"{BASE}/api/admin/suspend/v1").respond(200, json=fixture("suspend_list_response"))
    respx.get(f"{BASE}/api/admin/suspend-ready-q/v1").respond(200, json=fixture("suspend_ready_q_list_response"))
    found = await kumod.list_suspensions()
    assert [(s.domain, s.tenant, s.ready_queue is not None) for s in found] == [
        ("gmail.com", "acme", False),
        ("yahoo.com", None, False),
        (None, None, True),
    ]


@respx.mock
async def test_bounce_sends_only_fields_kumod_knows(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/bounce/v1").respond(200, json=fixture("bounce_response"))
    request = fixture("bounce_request")
    ident = await kumod.bounce(
        Target(domain="hotmail.com", tenant="acme", campaign="bad-list-import"),
        reason=request["reason"],
        duration="20m",
    )
    assert ident == fixture("bounce_response")["id"]
    assert sent_json(route) == request


@respx.mock
async def test_standing_bounces_are_listed_and_cancelled_by_id(kumod: KumoMtaClient) -> None:
    respx.get(f"{BASE}/api/admin/bounce/v1").respond(200, json=fixture("bounce_list_response"))
    cancel = respx.delete(f"{BASE}/api/admin/bounce/v1").respond(200)
    [standing] = await kumod.list_bounces()
    assert (standing.domain, standing.total_bounced) == ("hotmail.com", 412)
    await kumod.cancel_bounce(standing.id)
    assert sent_json(cancel) == fixture("bounce_cancel_request")


@respx.mock
async def test_rebind_and_retry_use_the_rebind_endpoint_with_always_flush(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/rebind/v1").respond(200, json=fixture("rebind_response"))
    request = fixture("rebind_request")
    await kumod.rebind(Target(domain="gmail.com", tenant="acme"), reason=request["reason"], data=request["data"])
    assert sent_json(route) == request
    await kumod.retry(Target(domain="gmail.com"), reason="flush now")
    assert sent_json(route) == {
        "domain": "gmail.com",
        "reason": "flush now",
        "suppress_logging": False,
        "data": {},
        "trigger_rebind_event": False,
        "always_flush": True,
    }


@respx.mock
async def test_queue_counts_come_from_the_prometheus_metrics(kumod: KumoMtaClient) -> None:
    respx.get(f"{BASE}/metrics").respond(200, text=shared_fixture("kumomta/metrics.prom").decode())
    counts = await kumod.queue_counts()
    assert counts.scheduled["spring-promo:acme@gmail.com"] == 1843
    assert counts.scheduled["globex@outlook.com!outlook-routing.example"] == 77
    # Ready queues by the name kumod's ready-queue suspensions use (the metric's "<protocol>:" prefix dropped).
    assert counts.ready["ip-1->(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com@smtp_client"] == 37
    assert counts.ready["unspecified->webhook.log_hook@lua:make.webhook.log_hook"] == 1
    suspended = fixture("suspend_ready_q_list_response")[0]["name"]
    assert suspended in counts.ready
    assert "scheduled_count_total" not in counts.scheduled


@respx.mock
async def test_inspect_message_asks_by_id_without_the_body(kumod: KumoMtaClient) -> None:
    route = respx.get(f"{BASE}/api/admin/inspect-message/v1").respond(200, json=fixture("inspect_message_response"))
    found = await kumod.inspect_message("d7ef132b5d7711eda8fd00155d9b1b1e")
    assert found["message"]["recipient"] == "jane.doe@gmail.com"
    assert dict(route.calls[0].request.url.params) == {"id": "d7ef132b5d7711eda8fd00155d9b1b1e", "want_body": "false"}


@respx.mock
async def test_a_5xx_is_retried_a_bounded_number_of_times_then_reported(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/suspend/v1").respond(503, text="busy")
    with pytest.raises(MtaRefused) as refused:
        await kumod.suspend(Target(domain="gmail.com"), reason="x")
    assert route.call_count == 3 and refused.value.status == 503 and "busy" in refused.value.message


@respx.mock
async def test_a_5xx_then_success_succeeds(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/suspend/v1")
    route.side_effect = [httpx.Response(502), httpx.Response(200, json=fixture("suspend_response"))]
    assert await kumod.suspend(Target(domain="gmail.com"), reason="x") == fixture("suspend_response")["id"]


@respx.mock
async def test_an_unreachable_node_is_reported_after_retries(kumod: KumoMtaClient) -> None:
    route = respx.get(f"{BASE}/metrics").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(MtaUnreachable):
        await kumod.queue_counts()
    assert route.call_count == 3
    respx.get(f"{BASE}/api/check-liveness/v1").mock(side_effect=httpx.ConnectTimeout("slow"))
    health = await kumod.health()
    assert not health.reachable


@respx.mock
async def test_a_4xx_is_not_retried_and_credentials_refused_are_their_own_error(kumod: KumoMtaClient) -> None:
    bad = respx.post(f"{BASE}/api/admin/bounce/v1").respond(400, text="unknown field `nope`")
    with pytest.raises(MtaRefused, match="unknown field"):
        await kumod.bounce(Target(domain="x.com"), reason="r")
    assert bad.call_count == 1
    respx.get(f"{BASE}/api/admin/bounce/v1").respond(401)
    with pytest.raises(MtaAuthRefused):
        await kumod.list_bounces()


@respx.mock
async def test_an_empty_target_is_refused_before_anything_is_sent(kumod: KumoMtaClient) -> None:
    route = respx.post(f"{BASE}/api/admin/bounce/v1").respond(200, json=fixture("bounce_response"))
    with pytest.raises(TargetNotExpressible, match="needs a domain"):
        await kumod.bounce(Target(), reason="everything?")
    assert route.call_count == 0


async def test_set_priority_is_not_something_kumomta_has(kumod: KumoMtaClient) -> None:
    with pytest.raises(UnsupportedOperation):
        await kumod.set_priority(Target(domain="gmail.com"), priority=9)


@respx.mock
@pytest.mark.parametrize(
    ("auth", "header"),
    [
        (NodeAuth(scheme="bearer", token="t0k"), "Bearer t0k"),
        (NodeAuth(scheme="basic", username="u", password="p"), "Basic dTpw"),
    ],
)
async def test_credentials_are_sent_as_configured(auth: NodeAuth, header: str) -> None:
    route = respx.get(f"{BASE}/api/check-liveness/v1").respond(200)
    adapter = driver_for("kumomta").connect(NodeConfig(name="kumo-1", base_url=BASE, auth=auth))
    assert (await adapter.health()).reachable
    await adapter.close()
    assert route.calls[0].request.headers["Authorization"] == header


def test_unknown_kinds_have_no_driver() -> None:
    with pytest.raises(UnsupportedOperation, match="sendmail"):
        driver_for("sendmail")


@respx.mock
async def test_an_answer_that_is_not_what_kumod_sends_is_a_bad_answer_not_a_crash(kumod: KumoMtaClient) -> None:
    respx.get(f"{BASE}/metrics").respond(200, text="<html>captive portal</html>\n{{{")
    respx.post(f"{BASE}/api/admin/suspend/v1").respond(200, text="<html>ok</html>")
    respx.get(f"{BASE}/api/admin/bounce/v1").respond(200, json={"not": "a list"})
    with pytest.raises(MtaBadAnswer, match="/metrics"):
        await kumod.queue_counts()
    with pytest.raises(MtaBadAnswer, match="suspend"):
        await kumod.suspend(Target(domain="gmail.com"), reason="r")
    with pytest.raises(MtaBadAnswer, match="bounce"):
        await kumod.list_bounces()


@respx.mock
async def test_the_tsa_daemons_suspensions_are_listed_without_kumods_credentials() -> None:
    adapter = KumoMtaClient(
        BASE, node="node-1", auth=NodeAuth(scheme="bearer", token="kumod-secret"), tsa_url="http://tsa.test:8008/"
    )
    respx.get(f"{BASE}/api/admin/suspend/v1").respond(200, json=[])
    respx.get(f"{BASE}/api/admin/suspend-ready-q/v1").respond(200, json=[])
    tsa = respx.get("http://tsa.test:8008/get_suspension_v1/suspended.json").respond(
        200, json=fixture("tsa_suspended_response")
    )
    try:
        found = await adapter.list_suspensions()
        with pytest.raises(UnsupportedOperation, match="expires"):
            await adapter.resume(found[0].id)
    finally:
        await adapter.close()
    assert "Authorization" not in tsa.calls[0].request.headers
    assert {s.source for s in found} == {"tsa"}
    scheduled = next(s for s in found if s.ready_queue is None)
    assert (scheduled.domain, scheduled.tenant, scheduled.campaign) == ("gmail.com", "acme", None)
    ready = next(s for s in found if s.ready_queue is not None)
    assert ready.ready_queue == "ip-1->(mta5|mta6|mta7).am0.yahoodns.net@smtp_client"
    assert ready.remaining == "until 2026-11-23T10:30:00Z"
