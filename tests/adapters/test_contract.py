"""One contract, every driver: the in-memory fake, KumoMTA (against the stand-in kumod) and ZoneMTA (against the
stand-in ZoneMTA), as saq runs one suite per backend. What a driver declares it can do, it does, within its
target; what it declares it cannot, it refuses without sending anything."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import respx

from adapters import http as node_http
from adapters.base import MessageRef, MtaAdapter, OperationCall, QueueCounts, Target, UnsupportedOperation
from adapters.driver import MtaDriver, NodeConfig
from adapters.fake import FakeDriver, FakeMta
from adapters.model import QueueOperationType as Op
from adapters.registry import DRIVERS, driver_for
from tests.fake_kumod import FakeKumod
from tests.fake_zonemta import FakeZoneMta

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
# Messages per recipient domain on the node before each test; each MTA names its queues its own way.
HELD = {"gmail.com": 3, "yahoo.com": 2, "example.org": 1}


@dataclass
class Backend:
    driver: MtaDriver
    adapter: MtaAdapter
    requests: Callable[[], int]  # how many requests the node has received
    held: Callable[[], dict[str, int]]  # messages per recipient domain the node holds now
    make_unreachable: Callable[[], None]


def _kumomta(router: respx.MockRouter) -> Backend:
    kumod = FakeKumod({f"acme@{domain}": n for domain, n in HELD.items()})
    router.route(host="kumo-1.test").mock(side_effect=kumod)
    driver = driver_for("kumomta")
    adapter = driver.connect(NodeConfig(name="kumo-1", base_url="http://kumo-1.test:8000"))

    def held() -> dict[str, int]:
        return {queue.partition("@")[2]: n for queue, n in kumod.scheduled.items() if n}

    def down() -> None:
        kumod.fail_with = 503

    return Backend(driver, adapter, lambda: len(kumod.requests), held, down)


def _zonemta(router: respx.MockRouter) -> Backend:
    zone = FakeZoneMta(now=NOW)
    for domain, n in HELD.items():
        zone.add_message([f"user{i}@{domain}" for i in range(n)])
    router.route(host="zone-1.test").mock(side_effect=zone)
    driver = driver_for("zonemta")
    adapter = driver.connect(NodeConfig(name="zone-1", base_url="http://zone-1.test:12080"))

    def held() -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in zone.rows:
            counts[row.domain] = counts.get(row.domain, 0) + 1
        return counts

    def down() -> None:
        zone.fail_with = 503

    return Backend(driver, adapter, lambda: len(zone.requests), held, down)


def _fake(router: respx.MockRouter) -> Backend:
    driver = FakeDriver()
    fake = FakeMta(
        dict(HELD),
        messages={MessageRef(f"m-{d}-{i}", f"user{i}@{d}"): d for d, n in HELD.items() for i in range(n)},
    )
    driver.nodes["fake-1"] = fake
    adapter = driver.connect(NodeConfig(name="fake-1", base_url="memory:"))

    def down() -> None:
        fake.reachable = False

    return Backend(
        driver, adapter, lambda: len(fake.calls), lambda: {q: n for q, n in fake.scheduled.items() if n}, down
    )


@pytest.fixture(params=["fake", "kumomta", "zonemta"])
async def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Backend]:
    monkeypatch.setattr(node_http, "RETRY_DELAYS", (0.0, 0.0))
    with respx.mock(assert_all_called=False) as router:
        made = {"fake": _fake, "kumomta": _kumomta, "zonemta": _zonemta}[request.param](router)
        yield made
        await made.adapter.close()


def test_every_registered_kind_has_a_driver_that_names_itself() -> None:
    assert {"kumomta", "zonemta"} <= set(DRIVERS)
    assert all(driver.kind == kind and driver.title for kind, driver in DRIVERS.items())


async def test_every_operation_is_either_supported_or_refused_with_a_reason(backend: Backend) -> None:
    capabilities = backend.driver.capabilities()
    for operation in Op:
        assert (operation in capabilities.operations) != (operation in capabilities.refused), operation
        assert capabilities.refused.get(operation, "reason") != ""


async def test_a_refused_operation_sends_nothing(backend: Backend) -> None:
    capabilities = backend.driver.capabilities()
    for operation in capabilities.refused:
        before = backend.requests()
        with pytest.raises(UnsupportedOperation):
            await backend.adapter.perform(
                OperationCall(operation=operation, target=Target(domain="gmail.com"), reason="x")
            )
        assert backend.requests() == before


async def test_per_message_operations_are_taken_only_where_declared(backend: Backend) -> None:
    capabilities = backend.driver.capabilities()
    for operation, support in capabilities.operations.items():
        if support.per_message:
            continue
        before = backend.requests()
        call = OperationCall(operation=operation, target=Target(), reason="x", messages=(MessageRef("m", "a@b.c"),))
        with pytest.raises(UnsupportedOperation):
            await backend.adapter.perform(call)
        assert backend.requests() == before


async def test_a_cancel_by_domain_removes_that_domains_messages_and_nothing_else(backend: Backend) -> None:
    capabilities = backend.driver.capabilities()
    support = capabilities.operations[Op.cancel]
    assert support.target_fields is not None and "domain" in support.target_fields
    await backend.adapter.perform(OperationCall(operation=Op.cancel, target=Target(domain="gmail.com"), reason="x"))
    assert backend.held() == {d: n for d, n in HELD.items() if d != "gmail.com"}


async def test_counts_and_holds_read_as_the_neutral_types(backend: Backend) -> None:
    counts = await backend.adapter.queue_counts()
    assert isinstance(counts, QueueCounts) and sum(counts.scheduled.values()) == sum(HELD.values())
    assert await backend.adapter.list_suspensions() == []
    assert await backend.adapter.list_bounces() == []


async def test_a_node_that_is_down_is_reported_unreachable_not_raised(backend: Backend) -> None:
    assert (await backend.adapter.health()).reachable
    backend.make_unreachable()
    assert not (await backend.adapter.health()).reachable


async def test_a_listing_driver_lists_every_message_it_counts(backend: Backend) -> None:
    listed = await backend.adapter.queued_messages()
    if not backend.driver.capabilities().lists_messages:
        assert listed is None
        return
    assert listed is not None and len(listed) == sum(HELD.values())
