"""Domain health: one score per recipient domain, fleet-wide and per tenant, from the per-minute rollups.

The ``score_domains`` job reads the rollups of the last ``MTACTL_DOMAIN_HEALTH_WINDOW_MINUTES`` (dimensions
``domain`` and ``tenant_domain``; never the events or the mirror) and writes ``domain_scores`` whole; the API and
``QueueMetrics.domain_health_scores`` read that table. The scoring function is ``score_of`` (README "Domain
reputation").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.model import DomainHealthScore
from adapters.sources import BOUNCED_TYPES, COMPLAINT_TYPES, DEFERRED_TYPES, DELIVERED_TYPES
from controlplane.db.tables import DomainScoreRow
from controlplane.domains.schema import DomainCursor, DomainHealth, DomainPage, DomainSort
from controlplane.errors import InvalidInput, NotFound
from controlplane.pagination import decode_cursor, encode_cursor
from controlplane.projections.rollups import DELIVERY_BUCKETS, ROLLUPS, minute_of

# What one complaint weighs against one bounce: mailbox providers act at 0.3 % complaints, at several % bounces.
COMPLAINT_WEIGHT = 25.0
DEFERRAL_WEIGHT = 0.5  # a deferral is retried: half a bounce
FLEET = ""  # domain_scores.tenant of the fleet-wide rows

# A delivery bucket's representative time (its range's middle; the open-ended last one at its lower bound).
_LOWER_BOUNDS = (0, *DELIVERY_BUCKETS[:-1])
_BUCKET_SECONDS = {
    f"delivery_le_{bound}": (low + bound) / 2 for low, bound in zip(_LOWER_BOUNDS, DELIVERY_BUCKETS, strict=True)
} | {"delivery_le_inf": float(DELIVERY_BUCKETS[-1])}


def score_of(*, delivered: int, bounced: int, deferred: int, complaints: int) -> float:
    """0-100: 100 * (1 - min(1, bounce_rate + 0.5 * deferral_rate + 25 * complaint_rate)), rates as fractions of
    the attempts (delivered + bounced + deferred), complaints of the deliveries. No attempt and no complaint: 100."""
    attempts = delivered + bounced + deferred
    bounce_rate = bounced / attempts if attempts else 0.0
    deferral_rate = deferred / attempts if attempts else 0.0
    complaint_rate = _complaint_rate(complaints, delivered)
    penalty = min(1.0, bounce_rate + DEFERRAL_WEIGHT * deferral_rate + COMPLAINT_WEIGHT * complaint_rate)
    return round(100.0 * (1.0 - penalty), 2)


def _complaint_rate(complaints: int, delivered: int) -> float:
    if not complaints:
        return 0.0
    return min(1.0, complaints / delivered) if delivered else 1.0


@dataclass
class _Tally:
    delivered: int = 0
    bounced: int = 0
    deferred: int = 0
    complaints: int = 0
    delivery_seconds: float = 0.0  # sum of the deliveries' bucket times
    timed: int = 0
    last_delivery: datetime | None = None


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


class DomainHealthService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, window_minutes: int = 60) -> None:
        self._sessions = sessions
        self.window_minutes = window_minutes

    async def score(self, *, now: datetime | None = None) -> int:
        """Score every domain with an attempt or complaint in the window; returns how many rows were written."""
        now = now or datetime.now(UTC)
        current = minute_of(now)
        r = ROLLUPS.c
        metrics = (*DELIVERED_TYPES, *BOUNCED_TYPES, *DEFERRED_TYPES, *COMPLAINT_TYPES, *_BUCKET_SECONDS)
        in_window = (
            r.dimension.in_(("domain", "tenant_domain")),
            r.minute > current - timedelta(minutes=self.window_minutes),
            r.minute <= current,
        )
        async with self._sessions.begin() as session:
            counted = (
                await session.execute(
                    select(r.dimension, r.value, r.metric, func.sum(r.events), func.max(r.minute))
                    .where(*in_window, r.metric.in_(metrics))
                    .group_by(r.dimension, r.value, r.metric)
                )
            ).all()
            # The last success before the window is carried over from the previous scoring (rather than looked
            # for in every minute the rollups keep).
            before = {
                (row.tenant, row.domain): row.last_successful_delivery
                for row in (await session.scalars(select(DomainScoreRow))).all()
            }
            tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
            for dimension, value, metric, events, last in counted:
                if dimension == "domain":
                    key = (FLEET, value)
                else:
                    tenant, _, domain = value.rpartition("/")
                    key = (tenant, domain)
                tally, n = tallies[key], int(events)
                if metric in DELIVERED_TYPES:
                    tally.delivered += n
                    tally.last_delivery = max(filter(None, (tally.last_delivery, last)), default=None)
                elif metric in BOUNCED_TYPES:
                    tally.bounced += n
                elif metric in DEFERRED_TYPES:
                    tally.deferred += n
                elif metric in COMPLAINT_TYPES:
                    tally.complaints += n
                else:
                    tally.delivery_seconds += _BUCKET_SECONDS[metric] * n
                    tally.timed += n
            rows: list[dict[str, Any]] = []
            for (tenant, domain), t in tallies.items():
                attempts = t.delivered + t.bounced + t.deferred
                if not attempts and not t.complaints:
                    continue
                # A minute's rollup stands for its last instant: the success happened within it.
                last = t.last_delivery + timedelta(seconds=59) if t.last_delivery else None
                last = min(last, now) if last else before.get((tenant, domain))
                rows.append(
                    {
                        "tenant": tenant[:100],
                        "domain": domain,
                        "score": score_of(
                            delivered=t.delivered, bounced=t.bounced, deferred=t.deferred, complaints=t.complaints
                        ),
                        "attempts": attempts,
                        "delivered": t.delivered,
                        "bounced": t.bounced,
                        "deferred": t.deferred,
                        "complaints": t.complaints,
                        "average_delivery_time": round(t.delivery_seconds / t.timed, 3) if t.timed else 0.0,
                        "last_successful_delivery": last,
                        "computed_at": now,
                    }
                )
            await session.execute(delete(DomainScoreRow))
            if rows:
                await session.execute(insert(DomainScoreRow), rows)
        return len(rows)

    async def page(
        self,
        *,
        tenant: str | None,
        sort: DomainSort = DomainSort.score,
        limit: int = 50,
        cursor: str | None = None,
        domain_prefix: str | None = None,
    ) -> DomainPage:
        offset = decode_cursor(cursor, DomainCursor).offset if cursor else 0
        c = DomainScoreRow
        orders: dict[DomainSort, list[Any]] = {
            DomainSort.score: [c.score.asc(), c.attempts.desc(), c.domain.asc()],
            DomainSort.score_desc: [c.score.desc(), c.attempts.desc(), c.domain.asc()],
            DomainSort.domain: [c.domain.asc()],
            DomainSort.attempts_desc: [c.attempts.desc(), c.domain.asc()],
        }
        order = orders[sort]
        statement = select(c).where(c.tenant == (tenant or FLEET))
        if domain_prefix:
            statement = statement.where(c.domain.startswith(domain_prefix.lower(), autoescape=True))
        async with self._sessions() as session:
            rows = (await session.scalars(statement.order_by(*order).offset(max(0, offset)).limit(limit + 1))).all()
        more = len(rows) > limit
        return DomainPage(
            data=[self._health(r) for r in rows[:limit]],
            cursor=encode_cursor(DomainCursor(offset=offset + limit)) if more else None,
            has_more=more,
        )

    async def get(self, domain: str, *, tenant: str | None) -> DomainHealth:
        if len(domain) > 320:
            raise InvalidInput("domain is longer than 320 characters", field="domain")
        async with self._sessions() as session:
            row = await session.get(DomainScoreRow, (tenant or FLEET, domain.lower()))
        if row is None:
            raise NotFound(
                f"no delivery attempt to {domain!r} in the last {self.window_minutes} minutes (as last scored)",
                field="domain",
            )
        return self._health(row)

    async def busiest(self, *, tenant: str | None, limit: int) -> dict[str, DomainHealthScore]:
        """The busiest domains' scores, for ``QueueMetrics.domain_health_scores``."""
        c = DomainScoreRow
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(c).where(c.tenant == (tenant or FLEET)).order_by(c.attempts.desc(), c.domain).limit(limit)
                )
            ).all()
        return {r.domain: self._health(r) for r in rows}

    def _health(self, row: DomainScoreRow) -> DomainHealth:
        return DomainHealth(
            domain=row.domain,
            score=row.score,
            bounce_rate=_pct(row.bounced, row.attempts),
            average_delivery_time=row.average_delivery_time,
            last_successful_delivery=row.last_successful_delivery,
            tenant_id=row.tenant or None,
            deferral_rate=_pct(row.deferred, row.attempts),
            complaint_rate=round(100.0 * _complaint_rate(row.complaints, row.delivered), 4),
            attempts=row.attempts,
            window_minutes=self.window_minutes,
            computed_at=row.computed_at,
        )
