"""Automatic entries from the event log: hard bounces, complaints, soft bounces past the threshold; idempotent
under replay and rebuild."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.services import Services
from tests.controlplane.api_client import api, bearer
from tests.support import load_fixture

URL = "/api/v1/suppressions"
BASE = int(time.time()) // 3600 * 3600 - 20 * 3600  # recent: a soft-bounce entry lasts days from its cause
INGEST = "/api/v1/events/ingest/kumomta"


def soft_failure(n: int, recipient: str = "full@mailbox.example") -> dict[str, Any]:
    record: dict[str, Any] = copy.deepcopy(load_fixture("kumomta/log_transient_failure.json"))
    record.update(
        id=f"{n:032x}",
        recipient=recipient,
        queue="acme@mailbox.example",
        timestamp=BASE + n * 3600,
        bounce_classification="QuotaIssues",  # a soft class (a full mailbox)
    )
    record.pop("event_time", None)
    return record


async def test_a_kumomta_hard_bounce_suppresses_the_recipient_globally_naming_the_event(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "events:ingest", "suppression:manage")
        accepted = await client.post(INGEST, json=[load_fixture("kumomta/log_bounce.json")], headers=headers)
        assert accepted.json()["accepted"] == 1
        found = await client.get(f"{URL}/no.such.user@gmail.com", headers=headers)
        assert found.status_code == 200, found.text
        entry = found.json()
        assert (entry["reason"], entry["tenant_id"], entry["expires_at"]) == ("hard_bounce", None, None)
        assert entry["source_event_id"] and len(entry["source_event_id"]) == 32
        listed = (await client.get(URL, params={"reason": "hard_bounce"}, headers=headers)).json()["data"]
        assert [e["email"] for e in listed] == ["no.such.user@gmail.com"]


async def test_a_feedback_report_suppresses_the_complainer_for_the_reported_tenant(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "events:ingest", "suppression:manage")
        await client.post(INGEST, json=[load_fixture("kumomta/log_feedback.json")], headers=headers)
        entry = (await client.get(f"{URL}/bob@yahoo.com", headers=headers)).json()
        assert (entry["reason"], entry["tenant_id"]) == ("complaint", "acme")
        # the feedback mailbox the report was sent to is not the complainer
        assert (await client.get(f"{URL}/fbl@mail.acme.example", headers=headers)).status_code == 404


async def test_soft_bounces_suppress_only_past_the_threshold_within_the_window(services: Services) -> None:
    async with api(
        services.settings, soft_bounce_threshold=3, soft_bounce_window_hours=5.0, soft_bounce_suppress_days=7.0
    ) as client:
        headers = await bearer(services, "events:ingest", "suppression:manage")
        # two, then a third 10 hours later: never three within 5 hours
        await client.post(INGEST, json=[soft_failure(0), soft_failure(1), soft_failure(11)], headers=headers)
        assert (await client.get(f"{URL}/full@mailbox.example", headers=headers)).status_code == 404
        # the same records again count nothing twice
        await client.post(INGEST, json=[soft_failure(0), soft_failure(1), soft_failure(11)], headers=headers)
        assert (await client.get(f"{URL}/full@mailbox.example", headers=headers)).status_code == 404
        await client.post(INGEST, json=[soft_failure(12)], headers=headers)  # two within 5 hours: 11 and 12
        assert (await client.get(f"{URL}/full@mailbox.example", headers=headers)).status_code == 404
        await client.post(INGEST, json=[soft_failure(13)], headers=headers)  # three: 11, 12, 13
        entry = (await client.get(f"{URL}/full@mailbox.example", headers=headers)).json()
        assert entry["reason"] == "soft_bounce"
        # expires seven days after the third soft bounce within the window
        expected = datetime.fromtimestamp(BASE + 13 * 3600, UTC) + timedelta(days=7)
        assert datetime.fromisoformat(entry["expires_at"]) == expected


async def test_a_rebuild_writes_the_same_entries_and_keeps_an_operators_removal(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "events:ingest", "suppression:manage")
        records = [load_fixture("kumomta/log_bounce.json"), load_fixture("kumomta/log_feedback.json")]
        await client.post(INGEST, json=records, headers=headers)
        before = (await client.get(URL, headers=headers)).json()["data"]
        assert len(before) == 2
        await services.projections.rebuild("suppressions")
        assert (await client.get(URL, headers=headers)).json()["data"] == before
        lifted = await client.delete(f"{URL}/bob@yahoo.com", params={"tenant_id": "acme"}, headers=headers)
        assert lifted.status_code == 200
        await services.projections.rebuild("suppressions")
        after = (await client.get(URL, headers=headers)).json()["data"]
        assert [e["email"] for e in after] == ["no.such.user@gmail.com"]


async def test_soft_bounces_count_per_poster_so_one_tenants_events_make_no_other_entry(services: Services) -> None:
    async with api(services.settings, soft_bounce_threshold=3, soft_bounce_window_hours=5.0) as client:
        mta = await bearer(services, "events:ingest", "suppression:manage")
        acme = await bearer(services, "events:ingest", tenant="acme")
        globex = await bearer(services, "events:ingest", tenant="globex")
        await client.post(INGEST, json=[soft_failure(11), soft_failure(12)], headers=acme)
        theirs = soft_failure(13) | {"queue": "globex@mailbox.example"}
        await client.post(INGEST, json=[theirs], headers=globex)
        assert (await client.get(f"{URL}/full@mailbox.example", headers=mta)).status_code == 404
        await client.post(INGEST, json=[soft_failure(14)], headers=mta)  # the MTA's own: one, not three
        assert (await client.get(f"{URL}/full@mailbox.example", headers=mta)).status_code == 404
        await client.post(INGEST, json=[soft_failure(15)], headers=acme)  # acme's third within the window
        entry = (await client.get(f"{URL}/full@mailbox.example", headers=mta)).json()
        assert (entry["reason"], entry["tenant_id"]) == ("soft_bounce", "acme")


async def test_a_csv_with_old_mac_line_ends_keeps_every_good_row(services: Services) -> None:
    async with api(services.settings) as client:
        headers = await bearer(services, "suppression:manage")
        body = b"a@b.example,manual\rc@d.example,manual\r"
        imported = await client.post(f"{URL}/import", content=body, headers=headers | {"content-type": "text/csv"})
        assert imported.status_code == 200, imported.text
        assert (await client.get(f"{URL}/c@d.example", headers=headers)).status_code == 200
