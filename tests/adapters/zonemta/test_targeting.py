"""An operation never reaches more than its target on ZoneMTA either: for generated rows and generated targets,
expressed as the operations service expresses them, the rows the stand-in ZoneMTA deletes are exactly those whose
domain (ZoneMTA's own: the recipient's part after the last @, lower case) the operator's target selects."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import OperationCall, Target, TargetNotExpressible, express
from adapters.model import QueueOperationType as Op
from adapters.zonemta.client import ZONEMTA_TARGET_FIELDS, ZoneMtaClient
from tests.fake_zonemta import FakeZoneMta

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DOMAINS = st.sampled_from(["gmail.com", "GMail.com", "mail.gmail.com", "yahoo.com", "gmail.co"])
RECIPIENTS = st.builds(lambda local, domain: f"{local}@{domain}", st.sampled_from(["a", "b.c", "d+e", "x@y"]), DOMAINS)
NAMES = st.sampled_from(["gmail.com", "yahoo.com", "acme@gmail.com", "c:acme@yahoo.com", "gmail.co"])
OPTIONAL = st.one_of(st.none(), st.sampled_from(["gmail.com", "yahoo.com", "acme", "x"]))


@st.composite
def targets(draw: st.DrawFn) -> Target:
    if draw(st.integers(0, 15)) == 0:
        return Target(everything=True)
    return Target(
        domain=draw(st.one_of(st.none(), st.sampled_from(["gmail.com", "yahoo.com", "gmail.co"]))),
        tenant=draw(OPTIONAL),
        campaign=draw(OPTIONAL),
        routing_domain=draw(OPTIONAL),
        queue_names=draw(st.one_of(st.none(), st.lists(NAMES, min_size=1, max_size=3).map(tuple))),
    )


def asked_for(target: Target, domain: str) -> bool:
    """The operator's target, read on a ZoneMTA row: it has a domain and no tenant, campaign or routing domain."""
    if target.everything:
        return True
    if target.is_empty() or target.tenant or target.campaign or target.routing_domain:
        return False
    return (target.domain is None or target.domain == domain) and (
        target.queue_names is None or domain in target.queue_names
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipients=st.lists(RECIPIENTS, min_size=1, max_size=8), target=targets())
def test_a_cancel_deletes_exactly_the_rows_its_target_selects(recipients: list[str], target: Target) -> None:
    zone = FakeZoneMta(now=NOW)
    for recipient in recipients:
        zone.add_message(recipient, deferred=len(recipient) % 2)
    before = {(r.id, r.seq): r.domain for r in zone.rows}

    async def run() -> None:
        with respx.mock(assert_all_called=False) as router:
            router.route(host="zone-1.test").mock(side_effect=zone)
            adapter = ZoneMtaClient("http://zone-1.test:12080", now=lambda: NOW)
            synced = (await adapter.queue_counts()).scheduled
            try:
                sent = express(target, ZONEMTA_TARGET_FIELDS, synced, operation="cancel")
            except TargetNotExpressible:
                return
            if sent.queue_names == ():
                return  # the operations service sends nothing
            await adapter.perform(OperationCall(operation=Op.cancel, target=sent, reason="x"))

    asyncio.run(run())
    after = {(r.id, r.seq) for r in zone.rows}
    deleted = {key for key in before if key not in after}
    assert deleted == {key for key, domain in before.items() if asked_for(target, domain)}
