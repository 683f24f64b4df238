"""The suppression list over HTTP: the contract's shapes, scopes and tenants, filters and paging, CSV in and out."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from controlplane.services import Services
from tests.controlplane.api_client import api, bearer

URL = "/api/v1/suppressions"


async def test_an_added_address_is_listed_found_and_lifted(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "suppression:manage")
        added = await client.post(URL, json={"email": "Bob@Example.COM", "reason": "manual"}, headers=headers)
        assert added.status_code == 201, added.text
        assert added.json()["email"] == "Bob@example.com"  # normalized as the mirror's recipients: the domain only
        again = await client.post(URL, json={"email": "Bob@example.com"}, headers=headers)
        assert (again.status_code, again.json()["field"]) == (409, "email")

        page = (await client.get(URL, params={"reason": "manual"}, headers=headers)).json()
        assert set(page) == {"data", "cursor", "has_more"}
        [entry] = page["data"]
        assert {k: entry[k] for k in ("email", "reason", "tenant_id", "expires_at", "source_event_id")} == {
            "email": "Bob@example.com",
            "reason": "manual",
            "tenant_id": None,
            "expires_at": None,
            "source_event_id": None,
        }
        assert (await client.get(URL, params={"reason": "hard_bounce"}, headers=headers)).json()["data"] == []
        assert (await client.get(f"{URL}/Bob@EXAMPLE.com", headers=headers)).status_code == 200
        assert (await client.get(f"{URL}/nobody@example.com", headers=headers)).status_code == 404

        lifted = await client.delete(f"{URL}/Bob@example.com", headers=headers)
        assert lifted.status_code == 200 and lifted.json()["removed"][0]["email"] == "Bob@example.com"
        assert (await client.get(f"{URL}/Bob@example.com", headers=headers)).status_code == 404
        assert (await client.delete(URL, params={"email": "Bob@example.com"}, headers=headers)).status_code == 404
        # lifted, it can be added again
        assert (await client.post(URL, json={"email": "Bob@example.com"}, headers=headers)).status_code == 201


async def test_bad_input_is_a_400_naming_the_field_and_the_scope_is_required(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "suppression:manage")
        for body, field in (
            ({"email": "not an address"}, "email"),
            ({"email": "a@b.example", "reason": "bored"}, "reason"),
            ({"email": "a@b.example", "colour": "red"}, "colour"),
        ):
            response = await client.post(URL, json=body, headers=headers)
            assert response.status_code == 400 and field in (response.json()["field"] or ""), response.text
        reader = await bearer(services, "email:read")
        assert (await client.get(URL, headers=reader)).status_code == 403


async def test_a_soft_bounce_entry_expires_by_default_and_expired_entries_stop_applying_at_once(
    services: Services,
) -> None:
    async with api(services.settings, soft_bounce_suppress_days=2.0) as client:
        headers = await bearer(services, "suppression:manage")
        soft = (await client.post(URL, json={"email": "s@x.example", "reason": "soft_bounce"}, headers=headers)).json()
        expires = datetime.fromisoformat(soft["expires_at"])
        assert timedelta(days=1.9) < expires - datetime.now(UTC) <= timedelta(days=2)
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        assert (
            await client.post(URL, json={"email": "e@x.example", "expires_at": soon}, headers=headers)
        ).status_code == 201
        services.suppressions.now = lambda: datetime.now(UTC) + timedelta(seconds=2)
        app_services = client.app.state.services
        app_services.suppressions.now = services.suppressions.now
        assert (await client.get(f"{URL}/e@x.example", headers=headers)).status_code == 404
        # an entry added already expired is answered as added, and applies to nothing
        past = await client.post(
            URL, json={"email": "p@x.example", "expires_at": "2000-01-01T00:00:00Z"}, headers=headers
        )
        assert past.status_code == 201 and past.json()["expires_at"].startswith("2000-01-01")
        assert (await client.get(f"{URL}/p@x.example", headers=headers)).status_code == 404
        listed = [e["email"] for e in (await client.get(URL, headers=headers)).json()["data"]]
        assert listed == ["s@x.example"]
        assert await services.suppressions.expire() == 2  # the job then drops both for good


async def test_a_tenant_bound_key_manages_its_tenant_and_reads_global_entries(services: Services) -> None:
    async with api(services.settings) as client:
        operator = await bearer(services, "suppression:manage")
        acme = await bearer(services, "suppression:manage", tenant="acme")
        await client.post(URL, json={"email": "g@x.example"}, headers=operator)
        await client.post(URL, json={"email": "b@x.example", "tenant_id": "beta"}, headers=operator)
        mine = await client.post(URL, json={"email": "a@x.example"}, headers=acme)
        assert mine.status_code == 201 and mine.json()["tenant_id"] == "acme"
        other = await client.post(URL, json={"email": "a@x.example", "tenant_id": "beta"}, headers=acme)
        assert (other.status_code, other.json()["field"]) == (403, "tenant_id")

        seen = {e["email"] for e in (await client.get(URL, headers=acme)).json()["data"]}
        assert seen == {"g@x.example", "a@x.example"}
        assert (await client.get(f"{URL}/b@x.example", headers=acme)).status_code == 404
        assert (await client.delete(f"{URL}/g@x.example", headers=acme)).status_code == 403  # global: read-only
        assert (await client.get(f"{URL}/stats", headers=acme)).json()["total"] == 2
        stats = (await client.get(f"{URL}/stats", headers=operator)).json()
        assert (stats["total"], stats["global_entries"], stats["tenant_entries"]) == (3, 1, 2)
        assert stats["by_reason"]["manual"] == 3
        only_beta = (await client.get(URL, params={"tenant_id": "beta"}, headers=operator)).json()["data"]
        assert [e["email"] for e in only_beta] == ["b@x.example"]


async def test_listing_pages_by_cursor_and_filters_by_search_domain_scope_and_time(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "suppression:manage")
        for n in range(7):
            await client.post(URL, json={"email": f"user{n}@{'a' if n % 2 else 'b'}.example"}, headers=headers)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            page = (await client.get(URL, params=params, headers=headers)).json()
            seen += [e["email"] for e in page["data"]]
            if not page["has_more"]:
                break
            cursor = page["cursor"]
        assert sorted(seen) == sorted(f"user{n}@{'a' if n % 2 else 'b'}.example" for n in range(7))
        assert len(seen) == 7
        by_domain = (await client.get(URL, params={"domain": "A.example"}, headers=headers)).json()["data"]
        assert {e["email"] for e in by_domain} == {"user1@a.example", "user3@a.example", "user5@a.example"}
        found = (await client.get(URL, params={"search": "ER4@"}, headers=headers)).json()["data"]
        assert [e["email"] for e in found] == ["user4@b.example"]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await client.get(URL, params={"created_after": later}, headers=headers)).json()["data"] == []
        assert (await client.get(URL, params={"scope": "tenant"}, headers=headers)).json()["data"] == []
        bad = await client.get(URL, params={"cursor": "nonsense"}, headers=headers)
        assert (bad.status_code, bad.json()["field"]) == (400, "cursor")


async def test_an_import_keeps_good_rows_reports_bad_ones_and_adds_nothing_twice(services: Services) -> None:
    body = "\n".join(
        [
            "email,reason,tenant_id,created_at,expires_at",
            "one@x.example,hard_bounce,,,",
            "not-an-address,manual,,,",
            "two@x.example,sulking,,,",
            "three@x.example,unsubscribe,acme,2026-01-01T00:00:00Z,",
            "four@x.example,manual,,,tomorrow",
            "",
            "one@x.example,hard_bounce,,,",
        ]
    )
    async with api(services.settings) as client:
        headers = await bearer(services, "suppression:manage")
        report = await client.post(f"{URL}/import", content=body, headers=headers | {"content-type": "text/csv"})
        assert report.status_code == 200, report.text
        result = report.json()
        assert (result["added"], result["already_present"]) == (2, 0)
        assert [(r["row"], r["field"]) for r in result["rejected"]] == [(3, "email"), (4, "reason"), (6, "expires_at")]
        again = (
            await client.post(f"{URL}/import", content=body, headers=headers | {"content-type": "text/csv"})
        ).json()
        assert (again["added"], again["already_present"]) == (0, 2)

        exported = await client.get(f"{URL}/export", headers=headers)
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert {(r["email"], r["reason"], r["tenant_id"]) for r in rows} == {
            ("one@x.example", "hard_bounce", ""),
            ("three@x.example", "unsubscribe", "acme"),
        }
        # the export imports back as it is: nothing new
        back = (
            await client.post(f"{URL}/import", content=exported.text, headers=headers | {"content-type": "text/csv"})
        ).json()
        assert (back["added"], back["already_present"], back["rejected"]) == (0, 2, [])
        as_json = (await client.get(f"{URL}/export", params={"format": "json"}, headers=headers)).json()
        assert sorted(e["email"] for e in as_json) == ["one@x.example", "three@x.example"]
        listing = await client.get(f"{URL}/export", params={"format": "kumomta"}, headers=headers)
        lines = listing.text.splitlines()
        assert lines[0].startswith("#") and sorted(lines[1:]) == ["one@x.example\t\t", "three@x.example\tacme\t"]
        binary = await client.post(f"{URL}/import", content=b"\xff\xfe", headers=headers)
        assert (binary.status_code, binary.json()["field"]) == (400, "body")
        nul = await client.post(f"{URL}/import", content=b"a@b.example\x00,manual", headers=headers)
        assert (nul.status_code, nul.json()["field"]) == (400, "body")
        huge = await client.post(
            f"{URL}/import", content=f'x@y.example,"{"z" * 200_000}"\nok@y.example', headers=headers
        )
        assert [(r["row"], r["field"]) for r in huge.json()["rejected"]] == [(1, "row")] and huge.json()["added"] == 1


async def test_the_mtas_ingest_key_may_read_the_export_and_nothing_else(services: Services) -> None:
    async with api(services.settings) as client:
        ingest = await bearer(services, "events:ingest")
        assert (await client.get(f"{URL}/export", params={"format": "kumomta"}, headers=ingest)).status_code == 200
        assert (await client.get(URL, headers=ingest)).status_code == 403
        assert (await client.post(URL, json={"email": "a@b.example"}, headers=ingest)).status_code == 403
