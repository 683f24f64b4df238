"""Per-minute counts of events (``event_rollups``), kept by a projection of the event log.

Grain: one row per (dimension, value, metric, minute). Dimensions: ``all`` (value ''), ``source`` (the MTA kind),
``domain`` (recipient domain), ``tenant``, ``campaign``, ``egress_source``, ``egress_pool``, ``node``,
``bounce_class`` (the MTA's own class), and ``tenant_domain`` (value ``<tenant>/<domain>``: a tenant's own domain
health; a domain never holds a slash, so the last one splits it). An event a tenant-bound key posted is counted in
``tenant`` and ``tenant_domain`` only (``TENANT_DIMENSIONS``). Metrics: the record type (``Reception``,
``Delivery``, ``Bounce``, …) and, for deliveries, the bucket of the time since reception (``delivery_le_<seconds>``,
not cumulative). A batch is summed in memory and written as one upsert that adds to the stored counts, in the
transaction that moves the checkpoint: the counts are exact however the projection is stopped and resumed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.db.engine import copy_to_stage, empty_stage
from controlplane.db.tables import EventRollupRow
from controlplane.projections.facts import facts_of
from controlplane.projections.log import LoggedEvent

ROLLUPS: Table = EventRollupRow.__table__  # type: ignore[assignment]
DELIVERY_BUCKETS = (1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
VALUE_WIDTH = 320
# Rows per INSERT: 5 parameters each, far below the 32,767 a Postgres statement may carry.
CHUNK = 4000


# Postgres: a pass's counts are COPYed into a session-local stage and added by one INSERT ... SELECT ... ON
# CONFLICT. A pass in event-time order holds ~3.5 counts per event (17,413 for 5,000 events, most of them
# tenant/domain pairs and campaigns): as one array parameter per column their encoding was ~20 µs of this
# process's CPU per event (asyncpg checks every element's type); COPY encodes the same rows for a fraction.
STAGE_NAME = "rollup_stage"
STAGE_COLUMNS = ("dimension", "value", "metric", "minute", "events")
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_NAME} "
    "(dimension text, value text, metric text, minute timestamptz, events bigint) ON COMMIT DELETE ROWS"
)
_POSTGRES_ADD = (
    f"INSERT INTO event_rollups AS r ({', '.join(STAGE_COLUMNS)}) "
    f"SELECT {', '.join(STAGE_COLUMNS)} FROM {STAGE_NAME} ORDER BY dimension, value, metric, minute "
    "ON CONFLICT (dimension, value, metric, minute) DO UPDATE SET events = r.events + excluded.events"
)


# The order of the values in a profile after its minute, record type and delivery bucket.
DIMENSIONS = (
    "all",
    "source",
    "domain",
    "tenant",
    "campaign",
    "egress_source",
    "egress_pool",
    "node",
    "bounce_class",
    "tenant_domain",
)


# What an event posted by a tenant-bound key is counted in: its tenant's own dimensions only. The fleet-wide ones
# (a domain, a campaign name, an egress source, a node) drive actions on every tenant's traffic (throttling rules,
# daily limits), and one tenant's key must not be able to trip them for all; an MTA posts with an unbound key.
TENANT_DIMENSIONS = frozenset({"tenant", "tenant_domain"})


def delivery_bucket(seconds: float) -> str:
    for bound in DELIVERY_BUCKETS:
        if seconds <= bound:
            return f"delivery_le_{bound}"
    return "delivery_le_inf"


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def count_events(events: Sequence[LoggedEvent]) -> Counter[tuple[str, str, str, datetime]]:
    """A batch's counts, by (dimension, value, metric, minute).

    Each event becomes one row of its minute, its metric and its value in every dimension (in ``DIMENSIONS``
    order; a delivery's time bucket is a second row with that metric); the rows are turned into columns and each
    dimension is counted over its column by ``Counter`` in C. Counting each event into each of its dimensions one
    by one cost ~14 µs of CPU per event (bench/projections.py); this ~4 µs."""
    unbound: list[tuple[Any, ...]] = []
    bound: list[tuple[Any, ...]] = []
    for event in events:
        facts = facts_of(event)
        bucket = None
        described: tuple[str | None, ...] = (None, None, None, None)
        if facts is not None:
            described = (facts.egress_source, facts.egress_pool, facts.node, facts.bounce_class)
            if facts.delivery_seconds is not None and math.isfinite(facts.delivery_seconds):
                bucket = delivery_bucket(facts.delivery_seconds)
        minute = minute_of(event.position.event_at)
        pair = f"{event.tenant_id}/{event.domain}" if event.tenant_id and event.domain else None
        values = ("", event.source, event.domain, event.tenant_id, event.campaign_id, *described, pair)
        rows = unbound if event.posted_by_tenant is None else bound
        rows.append((minute, event.type, *values))
        if bucket is not None:
            rows.append((minute, bucket, *values))
    counts: Counter[tuple[str, str, str, datetime]] = Counter()
    for rows, dimensions in ((unbound, DIMENSIONS), (bound, TENANT_DIMENSIONS)):
        if not rows:
            continue
        columns = list(zip(*rows, strict=True))
        minutes, metrics = columns[0], columns[1]
        for place, dimension in enumerate(DIMENSIONS, start=2):
            if dimension not in dimensions:
                continue
            for (value, metric, minute), n in Counter(zip(columns[place], metrics, minutes, strict=True)).items():
                if value is None or (value == "" and dimension != "all"):
                    continue
                counts[(dimension, value[:VALUE_WIDTH], metric, minute)] += n
    return counts


class RollupProjection:
    name = "rollups"

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
        counts = count_events(events)
        if not counts:
            return
        if session.get_bind().dialect.name == "postgresql":
            staged = [(*key, n) for key, n in counts.items()]
            await copy_to_stage(session, _CREATE_STAGE, STAGE_NAME, STAGE_COLUMNS, staged)
            # The upsert takes the rows in key order (one order for every writer's row locks).
            await session.execute(text(_POSTGRES_ADD))
            await empty_stage(session, STAGE_NAME)  # a rebuild adds once per batch in one transaction
            return
        keys = sorted(counts)  # one order for every writer's row locks
        rows = [
            {"dimension": d, "value": v, "metric": m, "minute": at, "events": counts[(d, v, m, at)]}
            for d, v, m, at in keys
        ]
        insert = sqlite_insert(ROLLUPS)
        statement = insert.on_conflict_do_update(
            index_elements=[ROLLUPS.c.dimension, ROLLUPS.c.value, ROLLUPS.c.metric, ROLLUPS.c.minute],
            set_={"events": ROLLUPS.c.events + insert.excluded.events},
        )
        for start in range(0, len(rows), CHUNK):
            await session.execute(statement, rows[start : start + CHUNK])

    async def reset(self, session: AsyncSession) -> None:
        await session.execute(delete(ROLLUPS))
