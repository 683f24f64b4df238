"""Domain reputation: one score per recipient domain (fleet-wide and per tenant) from the rollups' last window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.domains.service import score_of
from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.controlplane.policies.traffic import ingest, outcomes

NOW = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(hours=2)


def test_a_domain_that_takes_everything_scores_100_and_one_that_refuses_everything_0() -> None:
    assert score_of(delivered=50, bounced=0, deferred=0, complaints=0) == 100.0
    assert score_of(delivered=0, bounced=50, deferred=0, complaints=0) == 0.0
    assert score_of(delivered=50, bounced=0, deferred=50, complaints=0) == 75.0  # a deferral counts half
    assert score_of(delivered=1000, bounced=0, deferred=0, complaints=3) == 92.5  # 0.3 % complaints cost 7.5


@given(
    delivered=st.integers(0, 10**6),
    bounced=st.integers(0, 10**6),
    deferred=st.integers(0, 10**6),
    complaints=st.integers(0, 10**6),
    more=st.integers(1, 1000),
)
def test_the_score_stays_in_0_to_100_and_never_rises_with_more_bounces(
    delivered: int, bounced: int, deferred: int, complaints: int, more: int
) -> None:
    score = score_of(delivered=delivered, bounced=bounced, deferred=deferred, complaints=complaints)
    assert 0.0 <= score <= 100.0
    assert score_of(delivered=delivered, bounced=bounced + more, deferred=deferred, complaints=complaints) <= score


async def test_scores_come_from_the_window_of_the_rollups_fleet_wide_and_per_tenant(services: Services) -> None:
    await ingest(services, outcomes(NOW - timedelta(minutes=5), "gmail.com", "acme", delivered=6, bounced=4))
    await ingest(services, outcomes(NOW - timedelta(minutes=5), "gmail.com", "beta", delivered=10))
    await ingest(services, outcomes(NOW - timedelta(minutes=3), "yahoo.com", "acme", delivered=5, deferred=5))
    await ingest(services, outcomes(NOW - timedelta(hours=3), "old.example", "acme", bounced=9))  # out of window
    assert await services.domains.score(now=NOW) == 2 + 2 + 1  # fleet-wide, acme's, beta's

    gmail = await services.domains.get("GMAIL.com", tenant=None)
    assert (gmail.attempts, gmail.bounce_rate, gmail.score) == (20, 20.0, 80.0)
    assert gmail.last_successful_delivery is not None and gmail.last_successful_delivery <= NOW
    acme_gmail = await services.domains.get("gmail.com", tenant="acme")
    assert (acme_gmail.attempts, acme_gmail.score, acme_gmail.tenant_id) == (10, 60.0, "acme")
    yahoo = await services.domains.get("yahoo.com", tenant=None)
    assert (yahoo.deferral_rate, yahoo.score) == (50.0, 75.0)
    page = await services.domains.page(tenant=None)
    assert [d.domain for d in page.data] == ["yahoo.com", "gmail.com"]  # worst first
    metrics = await services.queues.metrics()
    assert metrics.domain_health_scores["gmail.com"].score == 80.0
    assert (await services.queues.metrics(tenant_id="acme")).domain_health_scores["gmail.com"].score == 60.0


async def test_scoring_again_carries_the_last_success_over_and_keeps_scoring(services: Services) -> None:
    await ingest(services, outcomes(NOW - timedelta(minutes=5), "gmail.com", "acme", delivered=6, bounced=4))
    assert await services.domains.score(now=NOW) == 2
    first = (await services.domains.get("gmail.com", tenant=None)).last_successful_delivery
    later = NOW + timedelta(hours=2)  # the deliveries have left the window; the last success has not
    await ingest(services, outcomes(later - timedelta(minutes=5), "gmail.com", "acme", bounced=2))
    assert await services.domains.score(now=later) == 2
    assert (await services.domains.get("gmail.com", tenant=None)).last_successful_delivery == first


async def test_the_api_lists_domains_by_score_and_confines_a_tenant_key_to_its_own_mail(services: Services) -> None:
    await ingest(services, outcomes(NOW - timedelta(minutes=5), "gmail.com", "acme", delivered=6, bounced=4))
    await ingest(services, outcomes(NOW - timedelta(minutes=5), "yahoo.com", "beta", delivered=10))
    await services.domains.score(now=NOW)
    async with api(services.settings) as client:
        reader = await bearer(services, "analytics:read")
        listed = (await client.get("/api/v1/domains?sort=-score&limit=1", headers=reader)).json()
        assert [d["domain"] for d in listed["data"]] == ["yahoo.com"] and listed["has_more"] is True
        rest = (await client.get(f"/api/v1/domains?sort=-score&cursor={listed['cursor']}", headers=reader)).json()
        assert [d["domain"] for d in rest["data"]] == ["gmail.com"] and rest["has_more"] is False
        health = await client.get("/api/v1/domains/gmail.com/health", headers=reader)
        assert health.status_code == 200 and health.json()["score"] == 60.0
        missing = await client.get("/api/v1/domains/nowhere.example/health", headers=reader)
        assert missing.status_code == 404 and missing.json()["field"] == "domain"
        acme = await bearer(services, "analytics:read", tenant="acme")
        mine = (await client.get("/api/v1/domains", headers=acme)).json()
        assert [(d["domain"], d["tenant_id"]) for d in mine["data"]] == [("gmail.com", "acme")]
        assert (await client.get("/api/v1/domains/yahoo.com/health", headers=acme)).status_code == 404
        other = await client.get("/api/v1/domains?tenant_id=beta", headers=acme)
        assert other.status_code == 403


@pytest.mark.parametrize("sort", ["domain", "-attempts", "score"])
async def test_every_sort_pages_through_every_domain_once(services: Services, sort: str) -> None:
    for n in range(7):
        await ingest(services, outcomes(NOW - timedelta(minutes=2), f"d{n}.example", delivered=n + 1, bounced=1))
    await services.domains.score(now=NOW)
    seen: list[str] = []
    cursor = None
    from controlplane.domains.schema import DomainSort

    while True:
        page = await services.domains.page(tenant=None, sort=DomainSort(sort), limit=3, cursor=cursor)
        seen += [d.domain for d in page.data]
        if not page.has_more:
            break
        cursor = page.cursor
    assert sorted(seen) == [f"d{n}.example" for n in range(7)] and len(seen) == 7
