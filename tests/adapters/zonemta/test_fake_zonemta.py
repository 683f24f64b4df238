"""The ZoneMTA stand-in (tests/fake_zonemta.py) answers in exactly the fixture shapes and keeps ZoneMTA's quirks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from tests.fake_zonemta import FakeZoneMta
from tests.support import shared_fixture

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
BASE = "http://zone-1.test:12080"


def fixture(name: str) -> Any:
    return json.loads(shared_fixture(f"zonemta/api/{name}"))


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and JSON types; a list is the set of its elements' shapes."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(shape(item), sort_keys=True) for item in value})
    return type(value).__name__


@pytest.fixture
def zone() -> Iterator[FakeZoneMta]:
    fake = FakeZoneMta(now=NOW)
    with respx.mock(assert_all_called=False) as router:
        router.route(host="zone-1.test").mock(side_effect=fake)
        yield fake


@pytest.fixture
def client(zone: FakeZoneMta) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE) as http:
        yield http


def test_zones_and_counter_have_the_fixture_shapes(zone: FakeZoneMta, client: httpx.Client) -> None:
    zone.add_message(["a@example.org", "b@example.net"])
    zone.add_message("c@yahoo.example", deferred=3)
    zone.add_message("d@example.com", zone="transactional")
    assert client.get("/zones").json() == fixture("zones.json")
    counter = client.get("/counter/zone/default").json()
    assert shape(counter) == shape(fixture("counter_zone_default.json"))
    # the :type param only names the first key; its value is always "all" (there is no :key in the route)
    assert counter == {
        "zone": "all",
        "active": {"entries": [{"key": "default", "value": 2}], "rows": 2},
        "deferred": {"entries": [{"key": "default", "value": 1}], "rows": 1},
    }
    assert list(client.get("/counter/anything/transactional").json()) == ["anything", "active", "deferred"]
    assert client.get("/counter/anything/transactional").json()["active"]["rows"] == 1


def test_queued_and_message_info_have_the_fixture_shapes(zone: FakeZoneMta, client: httpx.Client) -> None:
    zone.add_message("alice@example.org")
    ident = zone.add_message(["carol@yahoo.example", "dave@example.com"], deferred=5, fbl="campaign-4411")
    queued = client.get("/queued/queued/default").json()
    assert shape(queued) == shape(fixture("queued_queued_default.json"))
    assert [r["recipient"] for r in queued["list"]] == ["alice@example.org"]
    deferred = client.get("/queued/deferred/default", params={"sort": "queued", "order": "asc"}).json()
    assert shape(deferred) == shape(fixture("queued_deferred_default.json"))
    assert [(r["recipient"], r["deferred"]) for r in deferred["list"]] == [
        ("carol@yahoo.example", 5),
        ("dave@example.com", 5),
    ]
    # as in the fixture: 001 deferred, 002 retried (queued again, history kept but not shown) and locked
    assert client.put(f"/message/{ident}/002").json() == {"success": True}
    zone.lock(ident, "002")
    info = client.get(f"/message/{ident}").json()
    assert shape(info) == shape(fixture("message_info.json"))
    assert [(m["seq"], m["status"], "lock" in m, "deferred" in m) for m in info["messages"]] == [
        ("001", "DEFERRED", False, True),
        ("002", "QUEUED", True, False),
    ]
    assert zone.find(ident, "002")[0].deferred == zone.find(ident, "001")[0].deferred
    missing = client.get("/message/18b0879811a0000fff")
    assert (missing.status_code, missing.json()) == (404, fixture("message_not_found.json"))
    assert client.get("/queued/bogus/default").json()["type"] == "queued"


def test_lists_have_the_fixture_shapes(zone: FakeZoneMta, client: httpx.Client) -> None:
    zone.add_message("x@mail.example-isp.test")
    zone.blacklist_ip("mail.example-isp.test", "192.0.2.11")
    zone.skip_domains["default"] = ["gmail.com", "outlook.com"]
    zone.suppress(domain="dead-domain.example", created=NOW - timedelta(days=3))
    assert shape(client.get("/blacklist").json()) == shape(fixture("blacklist.json"))
    assert client.get("/skipdomains/default").json() == fixture("skipdomains_default.json")
    assert client.get("/skipdomains/bounces").json() == fixture("skipdomains_none.json")
    added = client.post("/suppressionlist", json=fixture("suppressionlist_add_request.json")).json()
    assert shape(added) == shape(fixture("suppressionlist_add_response.json"))
    listed = client.get("/suppressionlist").json()
    assert shape(listed) == shape(fixture("suppressionlist.json"))
    assert listed["suppressed"][0] == {"id": added["suppressed"]["id"], "created": "2026-11-23T09:00:00.000Z"} | {
        "address": "complainer@example.org"
    }
    gone = client.request("DELETE", "/suppressionlist", json={"id": added["suppressed"]["id"]}).json()
    assert shape(gone) == shape(fixture("suppressionlist_delete_response.json"))
    assert [e.get("domain") for e in client.get("/suppressionlist").json()["suppressed"]] == ["dead-domain.example"]
    assert client.post("/suppressionlist", data={}).json() == {"error": "No address or domain defined"}


def test_metrics_carry_the_fixture_series_with_counts_from_state(zone: FakeZoneMta, client: httpx.Client) -> None:
    for _ in range(3):
        zone.add_message("q@example.org")
    zone.add_message(["d1@example.org", "d2@example.org"], deferred=1)
    zone.blacklist_ip("example.org", "192.0.2.11")
    zone.delivery_status = {("delivered", "default"): 4, ("deferred", "default"): 2, ("rejected", "default"): 1}
    zone.bounces_generated = 1

    def series(text: str) -> dict[str, str]:
        return dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))

    def comments(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("#")]

    expected = shared_fixture("zonemta/api/metrics.txt").decode()
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    assert comments(answer.text) == comments(expected)
    got = series(answer.text)
    assert set(got) == set(series(expected))
    assert (got['zonemta_queue_size{type="queued"}'], got['zonemta_queue_size{type="deferred"}']) == ("3", "2")
    assert got["zonemta_blacklisted"] == "1"


@pytest.mark.parametrize("sort", ["", "id", "created", "queued"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_paging_through_queued_by_offset_returns_each_row_once(
    zone: FakeZoneMta, client: httpx.Client, sort: str, order: str
) -> None:
    for i in range(5):
        zone.add_message(f"r{i}@example.org", created=NOW - timedelta(minutes=i % 2))
    seen: list[str] = []
    start = 0
    while True:  # no total and no cursor: `start` is a skip offset; a short page is the last
        page = client.get(
            "/queued/queued/default", params={"start": start, "pageSize": 2, "sort": sort, "order": order}
        ).json()["list"]
        seen += [row["recipient"] for row in page]
        start += len(page)
        if len(page) < 2:
            break
    assert sorted(seen) == [f"r{i}@example.org" for i in range(5)]


def test_page_size_is_capped_and_defaulted_as_zonemta_does(zone: FakeZoneMta, client: httpx.Client) -> None:
    for i in range(1003):
        zone.add_message(f"r{i}@example.org")

    def size(**params: Any) -> int:
        return len(client.get("/queued/queued/default", params=params).json()["list"])

    assert size(pageSize=5000) == 1000
    assert size() == 1000
    assert size(pageSize=0) == 1000  # `Number('0') || 1000`
    assert size(pageSize=-1) == 1003  # clamped to 0, and MongoDB's limit(0) is no limit
    assert size(start=1000, pageSize=10) == 3
    assert size(start="nonsense", pageSize=2) == 2
    newest = client.get("/queued/queued/default", params={"pageSize": 1}).json()["list"][0]
    assert newest["recipient"] == "r1002@example.org"  # default sort: _id descending


def test_delete_skips_a_locked_row_and_answers_success_for_anything(zone: FakeZoneMta, client: httpx.Client) -> None:
    ident = zone.add_message(["a@example.org", "b@example.org"])
    zone.lock(ident, "001")
    assert client.delete(f"/message/{ident}/001").json() == {"success": True}
    assert client.delete(f"/message/{ident}/002").json() == {"success": True}
    assert [(r.seq, r.locked) for r in zone.find(ident)] == [("001", True)]
    assert [m["seq"] for m in client.get(f"/message/{ident}").json()["messages"]] == ["001"]
    zone.lock(ident, locked=False)
    client.delete(f"/message/{ident}/001")
    assert client.get(f"/message/{ident}").status_code == 404
    assert ident not in zone.meta
    assert zone.deleted() == [(ident, "001"), (ident, "002"), (ident, "001")]
    for method in ("DELETE", "PUT"):
        answer = client.request(method, "/message/18b0879811a0000fff/001")
        assert (answer.status_code, answer.json()) == (200, fixture("success.json"))


def test_put_retries_a_deferred_row_now_keeping_its_history(zone: FakeZoneMta, client: httpx.Client) -> None:
    ident = zone.add_message("a@example.org", deferred=2)
    history = zone.find(ident)[0].deferred
    client.put(f"/message/{ident}/001")
    row = zone.find(ident)[0]
    assert (row.queued, row.deferred) == (NOW, history)
    listed = client.get("/queued/queued/default").json()["list"]
    assert [(r["id"], r["queued"], r["deferred"]) for r in listed] == [(ident, "2026-11-23T09:00:00.000Z", 2)]
    assert client.get("/queued/deferred/default").json()["list"] == []


def test_suppressionlist_delete_ignores_the_query_string(zone: FakeZoneMta, client: httpx.Client) -> None:
    ident = zone.suppress(address="x@example.org")
    answer = client.delete("/suppressionlist", params={"id": ident})
    assert (answer.status_code, answer.json()) == (200, {"error": "Invalid entry ID"})
    assert [e["id"] for e in zone.suppressed] == [ident]
    assert client.request("DELETE", "/suppressionlist", data={"id": ident.upper()}).json() == {"deleted": ident}
    assert zone.suppressed == []
    assert client.request("DELETE", "/suppressionlist", json={"id": ident}).json() == {"deleted": ident}


def test_failures_garbage_and_the_request_log(client: httpx.Client, zone: FakeZoneMta) -> None:
    client.post("/suppressionlist", json={"domain": "Example.ORG"}, params={"x": "1"})
    assert zone.requests == [("POST", "/suppressionlist", {"x": "1"}, {"domain": "Example.ORG"})]
    assert client.get("/nowhere").status_code == 404
    assert client.post("/zones").status_code == 405
    zone.garbage = True
    answer = client.get("/zones")
    assert answer.status_code == 200 and re.match("<html>", answer.text)
    zone.garbage, zone.fail_with = False, 503
    assert client.get("/zones").status_code == 503
