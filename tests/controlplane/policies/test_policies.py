"""Throttling rules: each kind crosses its threshold and recovers on a controlled clock, observe records what
enforce does, enforcement reaches the stand-in kumod through the operations path and lifts itself, and a rule
never fights an operator who lifted its suspension."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import respx
from sqlalchemy import select

from adapters import http as node_http
from controlplane.db.tables import AuditRow
from controlplane.policies.schema import LiftedBy, Metric, Mode, PolicyInput, PolicyScope
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.controlplane.operations.test_mixed_fleet import KEY, add_zonemta
from tests.controlplane.policies.traffic import ingest, outcomes
from tests.fake_kumod import FakeKumod, register
from tests.fake_zonemta import FakeZoneMta

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
BOUNCES = {
    "name": "gmail-bounces",
    "metric": "bounce_rate",
    "threshold": 0.3,
    "window": "10m",
    "min_events": 10,
    "scope": "domain",
    "action": "suspend",
    "duration": "1h",
    "mode": "enforce",
}


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


def rule(**changes: Any) -> PolicyInput:
    return msgspec.convert({**BOUNCES, "mode": "observe", **changes}, PolicyInput)


async def audit_actions(services: Services, actor: str) -> list[str]:
    async with services.sessions() as session:
        rows = (await session.scalars(select(AuditRow).where(AuditRow.actor == actor).order_by(AuditRow.id))).all()
    return [r.action for r in rows]


@pytest.mark.parametrize(
    ("metric", "bad", "threshold"),
    [(Metric.bounce_rate, "bounced", 0.3), (Metric.deferral_rate, "deferred", 0.3)],
)
async def test_a_rate_rule_trips_when_it_crosses_its_threshold_and_not_again_once_the_rate_recovers(
    services: Services, metric: Metric, bad: str, threshold: float
) -> None:
    await services.policies.create(rule(metric=metric, threshold=threshold), actor="test")
    await ingest(services, outcomes(T0, delivered=8, **{bad: 2}))  # 20 %: below
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=1)) == []
    await ingest(services, outcomes(T0 + timedelta(minutes=2), **{bad: 6}))  # 8 of 16: 50 %
    [decision] = await services.policies.evaluate(now=T0 + timedelta(minutes=3))
    assert (decision.scope_value, decision.metric_value, decision.events) == ("gmail.com", 0.5, 16)
    assert decision.mode is Mode.observe and decision.operation_id is None and decision.lifted_at is None
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=4)) == []  # open: not decided twice

    # The hour passes; the traffic since is clean: the decision is lifted and the old burst does not trip it again.
    await ingest(services, outcomes(T0 + timedelta(minutes=64), delivered=20))
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=63, seconds=30)) == []
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=65)) == []
    [lifted] = (await services.policies.decisions()).data
    assert lifted.lifted_by is LiftedBy.policy and lifted.lifted_at == T0 + timedelta(minutes=63, seconds=30)

    # Crossing again after the lift trips it again.
    await ingest(services, outcomes(T0 + timedelta(minutes=66), **{bad: 30}))
    [again] = await services.policies.evaluate(now=T0 + timedelta(minutes=67))
    assert again.events == 20 + 30 and again.metric_value == 0.6


async def test_min_events_keeps_a_few_failures_from_tripping_a_rate(services: Services) -> None:
    await services.policies.create(rule(min_events=20), actor="test")
    await ingest(services, outcomes(T0, bounced=5))  # 100 % of 5
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=1)) == []


async def test_a_response_match_rule_counts_the_responses_its_pattern_finds(services: Services) -> None:
    await services.policies.create(
        rule(name="no-such-user", metric="response_match", pattern=r"NoSuchUser", threshold=5, min_events=1),
        actor="test",
    )
    await ingest(services, outcomes(T0, bounced=4, deferred=9))  # only the bounces' replies say NoSuchUser
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=1)) == []
    await ingest(services, outcomes(T0 + timedelta(minutes=1), bounced=1))
    [decision] = await services.policies.evaluate(now=T0 + timedelta(minutes=2))
    assert (decision.scope_value, decision.events) == ("gmail.com", 5)
    # Out of the window (10 minutes) the count falls back below the threshold.
    await services.policies.evaluate(now=T0 + timedelta(minutes=62))
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=75)) == []


async def test_match_narrows_a_rule_to_one_value_of_its_scope(services: Services) -> None:
    await services.policies.create(rule(match={"domain": "Yahoo.com"}), actor="test")
    await ingest(services, outcomes(T0, bounced=20))  # gmail.com
    assert await services.policies.evaluate(now=T0 + timedelta(minutes=1)) == []
    await ingest(services, outcomes(T0, "yahoo.com", bounced=20))
    assert [d.scope_value for d in await services.policies.evaluate(now=T0 + timedelta(minutes=1))] == ["yahoo.com"]


@pytest.mark.parametrize("scope", [PolicyScope.tenant, PolicyScope.campaign, PolicyScope.egress_source])
async def test_a_rule_watches_every_value_of_its_scope(services: Services, scope: PolicyScope) -> None:
    await services.policies.create(rule(scope=scope), actor="test")
    await ingest(services, outcomes(T0, bounced=20))
    [decision] = await services.policies.evaluate(now=T0 + timedelta(minutes=1))
    assert decision.scope_value == {"tenant": "acme", "campaign": "spring", "egress_source": "ip-1"}[scope]


@respx.mock
async def test_an_enforcing_rule_suspends_the_domain_at_kumod_and_lifts_it_after_its_duration(
    services: Services,
) -> None:
    """The issue's "Done when": a burst of hard bounces for one domain, as KumoMTA records them, suppresses those
    addresses, suspends the domain at the stand-in kumod and lifts it after the duration; every step is in the API
    and the audit log."""
    kumod = FakeKumod({"spring:acme@gmail.com": 40, "acme@yahoo.com": 3})
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings) as client:
        operator = await bearer(services, "fleet:manage", "queue:manage", "events:ingest", "suppression:manage")
        await register(client, operator, "kumo-1")
        created = await client.post("/api/v1/policies", json=BOUNCES, headers=operator)
        assert created.status_code == 201, created.text
        burst = outcomes(T0, delivered=5, bounced=25)
        posted = await client.post("/api/v1/events/ingest/kumomta", json=burst, headers=operator)
        assert posted.json()["accepted"] == 30
        await services.projections.catch_up()
        bounced = sorted(r["recipient"] for r in burst if r["type"] == "Bounce")
        suppressed = (await client.get("/api/v1/suppressions?reason=hard_bounce&limit=100", headers=operator)).json()
        assert sorted(e["email"] for e in suppressed["data"]) == bounced and len(bounced) == 25

        [decision] = await services.policies.evaluate(now=T0 + timedelta(minutes=1))
        assert decision.mode is Mode.enforce and decision.operation_id is not None
        [held] = kumod.suspensions.values()
        assert held["domain"] == "gmail.com" and "gmail-bounces" in held["reason"]
        [suspend] = kumod.posted("/api/admin/suspend/v1")
        assert suspend["duration"] == "1h"  # kumod ends it by itself too, should mtactl be away

        listed = (await client.get("/api/v1/policies/decisions", headers=operator)).json()["data"]
        assert [(d["scope_value"], d["operation_id"], d.get("lifted_at")) for d in listed] == [
            ("gmail.com", str(decision.operation_id), None)
        ]
        operation = (await client.get(f"/api/v1/operations/{decision.operation_id}", headers=operator)).json()
        assert operation["actor"] == "policy:gmail-bounces" and operation["status"] == "done"
        assert operation["request"]["domain"] == "gmail.com"

        assert await services.policies.evaluate(now=T0 + timedelta(minutes=30)) == []
        assert len(kumod.suspensions) == 1  # held for the whole hour
        assert await services.policies.evaluate(now=T0 + timedelta(minutes=61, seconds=1)) == []
        assert kumod.suspensions == {}
        [lifted] = (await client.get("/api/v1/policies/decisions", headers=operator)).json()["data"]
        assert lifted["lifted_by"] == "policy" and len(lifted["lift_operation_ids"]) == 1
        resume = (await client.get(f"/api/v1/operations/{lifted['lift_operation_ids'][0]}", headers=operator)).json()
        assert resume["actor"] == "policy:gmail-bounces" and resume["request"]["operation"] == "resume"
    assert await audit_actions(services, "policy:gmail-bounces") == [
        "policy.decide",
        "operation.suspend",
        "operation.resume",
        "policy.lift",
    ]


@respx.mock
async def test_a_rule_never_fights_an_operator_who_resumed_what_it_suspended(services: Services) -> None:
    kumod = FakeKumod({"spring:acme@gmail.com": 40})
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings) as client:
        operator = await bearer(services, "fleet:manage", "queue:manage")
        await register(client, operator, "kumo-1")
        await services.policies.create(rule(mode="enforce"), actor="test")
        await ingest(services, outcomes(T0, bounced=20))
        [decision] = await services.policies.evaluate(now=T0 + timedelta(minutes=1))
        resumed = await client.post(
            "/api/v1/operations",
            json={"operation": "resume", "reason": "false alarm", "domain": "gmail.com"},
            headers=operator,
        )
        assert resumed.status_code == 200 and kumod.suspensions == {}

        await ingest(services, outcomes(T0 + timedelta(minutes=3), bounced=20))  # still bouncing
        assert await services.policies.evaluate(now=T0 + timedelta(minutes=5)) == []
        [backed_off] = (await services.policies.decisions()).data
        assert backed_off.lifted_by is LiftedBy.operator and backed_off.id == decision.id
        assert await services.policies.evaluate(now=T0 + timedelta(minutes=50)) == []  # backs off for its duration
        assert kumod.suspensions == {} and len(kumod.posted("/api/admin/suspend/v1")) == 1

        # After the back-off, fresh evidence trips it again.
        await ingest(services, outcomes(T0 + timedelta(minutes=66), bounced=20))
        [again] = await services.policies.evaluate(now=T0 + timedelta(minutes=67))
        assert again.operation_id is not None and len(kumod.suspensions) == 1


@respx.mock
async def test_on_a_zonemta_only_fleet_the_decision_records_that_nothing_could_suspend(services: Services) -> None:
    respx.route(host="zone-1.test").mock(side_effect=FakeZoneMta())
    async with api(services.settings, secret_key=KEY) as client:
        await add_zonemta(client, await bearer(services, "fleet:manage"), "zone-1")
    await services.policies.create(rule(mode="enforce"), actor="test")
    await ingest(services, outcomes(T0, bounced=20))
    [decision] = await services.policies.evaluate(now=T0 + timedelta(minutes=1))
    assert decision.operation_id is None and decision.note is not None and "not acted on" in decision.note
    assert "suspend" in decision.note


async def test_the_api_refuses_a_malformed_rule_naming_the_field(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "queue:manage")
        cases = [
            ({"metric": "response_match"}, "pattern"),
            ({"metric": "response_match", "pattern": "(a+)+$", "threshold": 5}, "pattern"),
            ({"metric": "response_match", "pattern": "([", "threshold": 5}, "pattern"),
            ({"threshold": 3}, "threshold"),
            ({"window": "10 parsecs"}, "window"),
            ({"window": "30s"}, "window"),
            ({"duration": "0s"}, "duration"),
            ({"match": {"tenant": "acme"}}, "match"),
            ({"scope": "egress_source"}, "mode"),
            ({"action": "slow_down"}, "action"),
            ({"pattern": "x"}, "pattern"),
        ]
        for changes, field in cases:
            response = await client.post("/api/v1/policies", json=BOUNCES | changes, headers=headers)
            assert response.status_code == 400 and response.json()["field"] == field, (changes, response.text)
        assert (await client.post("/api/v1/policies", json=BOUNCES, headers=headers)).status_code == 201
        again = await client.post("/api/v1/policies", json=BOUNCES, headers=headers)
        assert again.status_code == 409 and again.json()["field"] == "name"


async def test_observe_and_enforce_switch_a_rule_by_name_and_delete_removes_it(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "queue:manage")
        body = BOUNCES | {"mode": "observe"}
        policy = (await client.post("/api/v1/policies", json=body, headers=headers)).json()
        changed = await client.patch("/api/v1/policies/gmail-bounces", json={"mode": "enforce"}, headers=headers)
        assert changed.status_code == 200 and changed.json()["mode"] == "enforce"
        assert changed.json()["id"] == policy["id"] and changed.json()["threshold"] == 0.3
        bad = await client.patch(f"/api/v1/policies/{policy['id']}", json={"threshold": 7}, headers=headers)
        assert bad.status_code == 400 and bad.json()["field"] == "threshold"
        listed = (await client.get("/api/v1/policies", headers=headers)).json()["data"]
        assert [(p["name"], p["mode"]) for p in listed] == [("gmail-bounces", "enforce")]
        assert (await client.delete("/api/v1/policies/gmail-bounces", headers=headers)).status_code == 204
        assert (await client.get("/api/v1/policies/gmail-bounces", headers=headers)).status_code == 404
        tenant_key = await bearer(services, "queue:manage", tenant="acme")
        assert (await client.get("/api/v1/policies", headers=tenant_key)).status_code == 403


@respx.mock
async def test_a_tenant_bound_keys_events_never_trip_a_rule_that_would_act_on_every_tenant(services: Services) -> None:
    kumod = FakeKumod({"spring:acme@gmail.com": 40, "other:globex@gmail.com": 5})
    respx.route(host="kumo-1.test").mock(side_effect=kumod)
    async with api(services.settings) as client:
        await register(client, await bearer(services, "fleet:manage"), "kumo-1")
        await services.policies.create(rule(mode="enforce"), actor="test")
        await services.policies.create(rule(name="nodes", scope="node", mode="enforce"), actor="test")
        acme = await bearer(services, "events:ingest", tenant="acme")
        burst = [dict(r, nodeid="kumo-1") for r in outcomes(T0, bounced=25)]
        assert (await client.post("/api/v1/events/ingest/kumomta", json=burst, headers=acme)).status_code == 202
        await services.projections.catch_up()
        assert await services.policies.evaluate(now=T0 + timedelta(minutes=1)) == []
    assert kumod.suspensions == {}  # globex's gmail.com queue, and the node, keep sending


@respx.mock
async def test_a_node_rule_names_exactly_one_node_and_never_a_label_selector(services: Services) -> None:
    kumods = {name: FakeKumod({"acme@gmail.com": 5}) for name in ("kumo-1", "kumo-2")}
    for name, kumod in kumods.items():
        respx.route(host=f"{name}.test").mock(side_effect=kumod)
    async with api(services.settings) as client:
        operator = await bearer(services, "fleet:manage", "events:ingest")
        await register(client, operator, "kumo-1", "kumo-2")  # both labelled region=eu
        await services.policies.create(rule(scope="node", mode="enforce"), actor="test")
        burst = [dict(r, nodeid="region=eu") for r in outcomes(T0, bounced=25)]
        assert (await client.post("/api/v1/events/ingest/kumomta", json=burst, headers=operator)).status_code == 202
        await services.projections.catch_up()
        [decision] = await services.policies.evaluate(now=T0 + timedelta(minutes=1))
    assert decision.operation_id is None and "no registered node is named 'region=eu'" in (decision.note or "")
    assert all(k.suspensions == {} for k in kumods.values())
