"""Per-minute counts of events (``event_rollups``), kept by a projection of the event log.

Grain: one row per (dimension, value, metric, minute). Dimensions: ``all`` (value ''), ``source`` (the MTA kind),
``domain`` (recipient domain), ``tenant``, ``campaign``, ``egress_source``, ``egress_pool``, ``node`` and
``bounce_class`` (the MTA's own class). Metrics: the record type (``Reception``, ``Delivery``, ``Bounce``, …) and,
for deliveries, the bucket of the time since reception (``delivery_le_<seconds>``, not cumulative). A batch is
summed in memory and written as one upsert that adds to the stored counts, in the transaction that moves the
checkpoint: the counts are exact however the projection is stopped and resumed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.db.tables import EventRollupRow
from controlplane.projections.facts import facts_of
from controlplane.projections.log import LoggedEvent

ROLLUPS: Table = EventRollupRow.__table__  # type: ignore[assignment]
DELIVERY_BUCKETS = (1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
VALUE_WIDTH = 320
# Rows per INSERT: 5 parameters each, far below the 32,767 a Postgres statement may carry.
CHUNK = 4000


def delivery_bucket(seconds: float) -> str:
    for bound in DELIVERY_BUCKETS:
        if seconds <= bound:
            return f"delivery_le_{bound}"
    return "delivery_le_inf"


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class RollupProjection:
    name = "rollups"

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
        counts: Counter[tuple[str, str, str, datetime]] = Counter()
        for event in events:
            facts = facts_of(event)
            minute = minute_of(event.position.event_at)
            dimensions = [("all", ""), ("source", event.source), ("domain", event.domain)]
            if event.tenant_id:
                dimensions.append(("tenant", event.tenant_id))
            if event.campaign_id:
                dimensions.append(("campaign", event.campaign_id))
            metrics = [event.type]
            if facts is not None:
                for name, value in (
                    ("egress_source", facts.egress_source),
                    ("egress_pool", facts.egress_pool),
                    ("node", facts.node),
                    ("bounce_class", facts.bounce_class),
                ):
                    if value:
                        dimensions.append((name, value[:VALUE_WIDTH]))
                if facts.delivery_seconds is not None and math.isfinite(facts.delivery_seconds):
                    metrics.append(delivery_bucket(facts.delivery_seconds))
            for dimension, value in dimensions:
                for metric in metrics:
                    counts[(dimension, value, metric, minute)] += 1
        if not counts:
            return
        rows = [
            {"dimension": d, "value": v, "metric": m, "minute": at, "events": n}
            for (d, v, m, at), n in sorted(counts.items())
        ]
        postgres = session.get_bind().dialect.name == "postgresql"
        insert = pg_insert(ROLLUPS) if postgres else sqlite_insert(ROLLUPS)
        statement = insert.on_conflict_do_update(
            index_elements=[ROLLUPS.c.dimension, ROLLUPS.c.value, ROLLUPS.c.metric, ROLLUPS.c.minute],
            set_={"events": ROLLUPS.c.events + insert.excluded.events},
        )
        for start in range(0, len(rows), CHUNK):
            await session.execute(statement, rows[start : start + CHUNK])

    async def reset(self, session: AsyncSession) -> None:
        await session.execute(delete(ROLLUPS))
