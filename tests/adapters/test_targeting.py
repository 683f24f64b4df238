"""An operation never reaches more than its target: for generated targets and generated queues, the body kumod
receives selects (by kumod's own rule, ``tests/kumod_rules.py``) no queue the target does not select."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import Target, TargetNotExpressible, express
from adapters.kumomta.client import KUMOD_TARGET_FIELDS, KumoMtaClient
from tests import kumod_rules

PARTS = st.sampled_from(["a", "b", "x.com", "y.com"])
OPTIONAL_PART = st.one_of(st.none(), st.just(""), PARTS)


@st.composite
def queue_names(draw: st.DrawFn) -> str:
    campaign, tenant, routing = draw(OPTIONAL_PART), draw(OPTIONAL_PART), draw(OPTIONAL_PART)
    domain = draw(PARTS)
    name = domain if routing is None else f"{domain}!{routing}"
    if campaign is not None:
        name = f"{campaign}:{tenant or ''}@{name}"
    elif tenant is not None:
        name = f"{tenant}@{name}"
    return name


@st.composite
def targets(draw: st.DrawFn) -> Target:
    if draw(st.integers(0, 20)) == 0:
        return Target(everything=True)
    optional = st.one_of(st.none(), PARTS)
    names = draw(st.one_of(st.none(), st.lists(queue_names(), min_size=1, max_size=3).map(tuple)))
    return Target(
        domain=draw(optional),
        tenant=draw(optional),
        campaign=draw(optional),
        routing_domain=draw(optional),
        queue_names=names,
    )


def target_selects(target: Target, queue_name: str) -> bool:
    """What the operator asked for, by the same reading of a queue name kumod uses: every field given must hold."""
    if target.everything:
        return True
    campaign, tenant, domain, routing = kumod_rules.parse(queue_name)
    have = {"campaign": campaign, "tenant": tenant, "domain": domain, "routing_domain": routing}
    return (
        not target.is_empty()
        and (target.queue_names is None or queue_name in target.queue_names)
        and all(getattr(target, f) is None or getattr(target, f) == have[f] for f in have)
    )


def sent_bodies(family: str, target: Target) -> list[dict[str, Any]]:
    """What a KumoMtaClient posts to a stand-in kumod for ``target``."""
    bodies: list[dict[str, Any]] = []

    def kumod(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "9f3e1a52-5b7b-4f0e-8f57-1c2d3e4f5a6b"})

    async def run() -> None:
        client = KumoMtaClient("http://kumod.test", transport=httpx.MockTransport(kumod))
        try:
            if family == "suspend":
                await client.suspend(target, reason="r")
            elif family == "bounce":
                await client.bounce(target, reason="r")
            else:
                await client.rebind(target, reason="r", data={})
        except TargetNotExpressible:
            pass
        finally:
            await client.close()

    asyncio.run(run())
    return bodies


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(sorted(KUMOD_TARGET_FIELDS)),
    target=targets(),
    universe=st.lists(queue_names(), min_size=1, max_size=12, unique=True),
    synced_share=st.integers(0, 12),
)
def test_no_body_sent_to_kumod_selects_a_queue_the_target_does_not(
    family: str, target: Target, universe: list[str], synced_share: int
) -> None:
    synced = None if synced_share == 0 else universe[:synced_share]  # 0: the node was never synced
    try:
        exact = express(target, KUMOD_TARGET_FIELDS[family], synced, operation=family)
    except TargetNotExpressible:
        return  # refused before anything is sent
    if exact.queue_names == ():
        return  # nothing on this node is targeted: the service sends nothing
    for body in sent_bodies(family, exact):
        reached = {q for q in universe if kumod_rules.selects(family, body, q)}
        wanted = {q for q in universe if target_selects(target, q)}
        assert reached <= wanted, (body, sorted(reached - wanted))


@settings(max_examples=200, deadline=None)
@given(family=st.sampled_from(sorted(KUMOD_TARGET_FIELDS)), target=targets())
def test_kumod_is_sent_a_body_naming_no_queue_only_when_everything_was_asked_for(family: str, target: Target) -> None:
    for body in sent_bodies(family, target):
        names_nothing = not (set(body) & kumod_rules.SELECTING) or body.get("queue_names") == []
        assert not names_nothing or target.everything, body


def test_a_routing_domain_suspension_is_sent_as_the_nodes_matching_queue_names() -> None:
    synced = ["acme@gmail.com!relay.example", "acme@gmail.com", "beta@yahoo.com!relay.example"]
    exact = express(Target(routing_domain="relay.example", tenant="acme"), KUMOD_TARGET_FIELDS["suspend"], synced)
    assert exact == Target(queue_names=("acme@gmail.com!relay.example",))
    assert sent_bodies("suspend", exact) == [{"queue_names": ["acme@gmail.com!relay.example"], "reason": "r"}]


def test_a_retry_of_one_queue_is_sent_as_its_four_parts_or_refused() -> None:
    spelled = express(Target(queue_names=("c:acme@gmail.com!relay",)), KUMOD_TARGET_FIELDS["rebind"])
    assert spelled == Target(campaign="c", tenant="acme", domain="gmail.com", routing_domain="relay")
    try:
        express(Target(queue_names=("acme@gmail.com",)), KUMOD_TARGET_FIELDS["rebind"], operation="retry")
    except TargetNotExpressible as refused:
        assert refused.field == "queue_name"
    else:
        raise AssertionError("a partial queue name would reach every campaign and routing domain of it")
