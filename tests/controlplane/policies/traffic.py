"""KumoMTA records for the reputation and throttling tests: outcomes for one domain at a given time."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from adapters.kumomta.log_source import KUMOMTA
from controlplane.events.service import decode_body, write_group
from controlplane.services import Services
from tests.controlplane.events.test_hostile_records import record

KINDS = {"delivered": "log_delivery", "bounced": "log_bounce", "deferred": "log_transient_failure"}


def outcomes(at: datetime, domain: str = "gmail.com", tenant: str = "acme", **counts: int) -> list[dict[str, Any]]:
    """``delivered=8, bounced=2`` -> that many records for ``domain`` at ``at``, for ``tenant``'s campaign."""
    records = []
    for outcome, n in counts.items():
        for i in range(n):
            records.append(
                record(
                    KINDS[outcome],
                    recipient=f"{outcome}{i}.{at.timestamp():.0f}@{domain}",
                    queue=f"spring:{tenant}@{domain}",
                    meta={"tenant": tenant, "campaign": "spring"},
                    timestamp=int(at.timestamp()),
                    event_time=None,
                    created=int(at.timestamp()) - 30,
                    created_time=None,
                )
            )
    return records


async def ingest(services: Services, records: list[dict[str, Any]]) -> None:
    """Append to the event log as an ingest would, and bring every projection up to date."""
    decoded, dead, rejected = decode_body(json.dumps(records).encode(), source=KUMOMTA, api_key=None, tenant=None)
    assert rejected == []
    async with services.sessions.begin() as session:
        await write_group(session, decoded, dead)
    await services.projections.catch_up()
