"""The ZoneMTA adapter against the stand-in ZoneMTA (tests/fake_zonemta.py, shaped by the fixtures): listing,
counting, and changes that are reported only when read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import respx

from adapters import http as node_http
from adapters.base import MessageRef, MtaBadAnswer, OperationCall, Target, UnsupportedOperation
from adapters.http import NodeAuth
from adapters.model import MessageQueueStatus
from adapters.model import QueueOperationType as Op
from adapters.zonemta import client as zonemta_client
from adapters.zonemta.client import ZoneMtaClient
from adapters.zonemta.mapping import recipient_uuid
from tests.fake_zonemta import FakeZoneMta

BASE = "http://zone-1.test:12080"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))


@pytest.fixture
def zone() -> FakeZoneMta:
    fake = FakeZoneMta(now=NOW)
    respx.route(host="zone-1.test").mock(side_effect=fake)
    return fake


def client() -> ZoneMtaClient:
    return ZoneMtaClient(BASE, node="zone-1", now=lambda: NOW)


@respx.mock
async def test_every_row_of_every_zone_is_listed_once_across_pages(
    zone: FakeZoneMta, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zonemta_client, "PAGE_SIZE", 3)
    for n in range(7):
        zone.add_message(f"user{n}@gmail.com", deferred=n % 2)
    zone.add_message(["a@yahoo.com", "b@yahoo.com"], zone="transactional")
    listed = await client().listed()
    assert sorted(r.recipient for r in listed) == sorted(
        [f"user{n}@gmail.com" for n in range(7)] + ["a@yahoo.com", "b@yahoo.com"]
    )
    pages = [q for method, path, q, _ in zone.requests if path.startswith("/queued/")]
    assert all(q["order"] == "asc" and q["pageSize"] == "3" for q in pages)


@respx.mock
async def test_counts_are_per_recipient_domain_and_per_zone(zone: FakeZoneMta) -> None:
    zone.add_message(["a@gmail.com", "b@GMAIL.com", "c@yahoo.com"])
    zone.add_message("d@gmail.com", zone="transactional", deferred=2)
    counts = await client().queue_counts()
    assert counts.scheduled == {"gmail.com": 3, "yahoo.com": 1}
    assert counts.ready == {"bounces": 0, "default": 3, "transactional": 1}


@respx.mock
async def test_listed_rows_become_ready_or_deferred_observations(zone: FakeZoneMta) -> None:
    due = zone.add_message("a@gmail.com")
    later = zone.add_message("b@gmail.com", deferred=4)
    seen = {o.message_id: o for o in await client().queued_messages()}
    assert seen[due].status is MessageQueueStatus.ready and seen[due].id == recipient_uuid(due, "a@gmail.com")
    assert seen[later].status is MessageQueueStatus.deferred and seen[later].num_attempts == 4
    assert seen[later].queue_name == "gmail.com" and seen[later].pool_name == "default"


@respx.mock
async def test_cancel_by_domain_deletes_only_that_domains_rows_and_counts_what_was_verified(zone: FakeZoneMta) -> None:
    target = zone.add_message(["a@gmail.com", "b@yahoo.com"])
    locked = zone.add_message("c@gmail.com", locked=True)
    other = zone.add_message("d@gmail.co")
    done = await client().perform(OperationCall(operation=Op.cancel, target=Target(domain="gmail.com"), reason="x"))
    assert done.affected == 1
    assert done.note is not None and "locked by a delivery in progress" in done.note and locked in done.note
    remaining = {(r.id, r.recipient) for r in zone.rows}
    assert remaining == {(target, "b@yahoo.com"), (locked, "c@gmail.com"), (other, "d@gmail.co")}


@respx.mock
async def test_a_per_message_cancel_reaches_exactly_the_recipients_named(zone: FakeZoneMta) -> None:
    ident = zone.add_message(["a@gmail.com", "b@gmail.com"])
    call = OperationCall(
        operation=Op.purge,
        target=Target(),
        reason="x",
        messages=(MessageRef(ident, "B@gmail.com"), MessageRef("ffffffffffffffffff", "z@gmail.com")),
    )
    done = await client().perform(call)
    assert done.affected == 1 and done.note is None
    assert [(r.id, r.recipient) for r in zone.rows] == [(ident, "a@gmail.com")]


@respx.mock
async def test_retry_makes_deferred_rows_due_and_leaves_the_rest(zone: FakeZoneMta) -> None:
    later = zone.add_message("a@gmail.com", deferred=3)
    due = zone.add_message("b@gmail.com")
    done = await client().perform(OperationCall(operation=Op.retry, target=Target(everything=True), reason="x"))
    assert done.affected == 1
    assert not zone.is_deferred(zone.find(later)[0])
    puts = [path for method, path, _, _ in zone.requests if method == "PUT"]
    assert puts == [f"/message/{later}/001"] and due not in "".join(puts)


@respx.mock
async def test_a_tenant_target_selects_no_zonemta_row(zone: FakeZoneMta) -> None:
    zone.add_message("a@gmail.com")
    done = await client().perform(OperationCall(operation=Op.cancel, target=Target(tenant="acme"), reason="x"))
    assert done.affected == 0 and len(zone.rows) == 1


@pytest.mark.parametrize("operation", [Op.suspend, Op.resume, Op.rebind, Op.set_priority])
async def test_what_zonemta_cannot_do_is_refused_before_anything_is_sent(operation: Op) -> None:
    with respx.mock(assert_all_called=False) as router:
        route = router.route(host="zone-1.test")
        with pytest.raises(UnsupportedOperation):
            await client().perform(OperationCall(operation=operation, target=Target(domain="gmail.com"), reason="x"))
        assert route.call_count == 0


@respx.mock
async def test_an_answer_that_is_not_zonemtas_is_a_bad_answer(zone: FakeZoneMta) -> None:
    zone.garbage = True
    with pytest.raises(MtaBadAnswer, match="/zones"):
        await client().queue_counts()
    assert not (await client().health()).reachable


@respx.mock
async def test_proxy_credentials_are_sent(zone: FakeZoneMta) -> None:
    adapter = ZoneMtaClient(BASE, auth=NodeAuth(scheme="bearer", token="proxy-t0k"))
    assert (await adapter.health()).reachable
    assert respx.calls.last.request.headers["Authorization"] == "Bearer proxy-t0k"


@respx.mock
async def test_a_message_zonemta_does_not_hold_is_none_not_an_error(zone: FakeZoneMta) -> None:
    assert await client().message("ffffffffffffffffff") is None
    ident = zone.add_message("a@gmail.com", retry_in=timedelta(hours=1), deferred=1)
    info = await client().message(ident)
    assert info is not None and info.messages[0].status == "DEFERRED"
