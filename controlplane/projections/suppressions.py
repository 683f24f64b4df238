"""Automatic suppression entries, as a projection of the event log.

* A hard bounce (the observation's bounce classification ``hard`` on a bounced message, whichever MTA logged it)
  suppresses the recipient globally: the address does not take mail, whoever sends.
* A complaint (KumoMTA's Feedback record: the ARF report's addresses) suppresses each address for the tenant of
  the reported message (globally when the report names none).
* ``MTACTL_SOFT_BOUNCE_THRESHOLD`` soft bounces of one address within ``MTACTL_SOFT_BOUNCE_WINDOW_HOURS`` suppress it
  globally until ``MTACTL_SOFT_BOUNCE_SUPPRESS_DAYS`` after the last of them.
* An event a tenant-bound key posted makes an entry for that tenant only: a tenant's key cannot suppress an
  address for everyone.

Entries take the time of the event that caused them, and the upsert keeps the first cause (``store.upsert``):
applying a batch twice, or replaying the whole log, writes the same entries. Soft bounces are kept one row per
event, keyed by its identity, so a replay counts none twice. Enforcement at the MTAs is left to the
``enforce_suppressions`` job (no network inside a projection's transaction): it finds new entries by their empty
``enforced_at``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.model import BounceType, MessageQueueStatus, normalize_address
from controlplane.db.tables import SoftBounceRow, SuppressionRow
from controlplane.projections.facts import facts_of
from controlplane.projections.log import LoggedEvent
from controlplane.settings import Settings
from controlplane.suppressions.schema import EMAIL_RULE, SuppressionReason
from controlplane.suppressions.store import entry_row, upsert, utc

log = logging.getLogger("mtactl.projections")

PROJECTION_ACTOR = "projection:suppressions"
_SOFT_STATUSES = (MessageQueueStatus.deferred, MessageQueueStatus.bounced, MessageQueueStatus.expired)
SOFT_CHUNK = 500  # addresses per read of their soft bounces (two parameters each)


_EMAIL = re.compile(EMAIL_RULE)


def _valid(address: str) -> bool:
    return len(address) <= 320 and _EMAIL.match(address) is not None


class SuppressionProjection:
    name = "suppressions"

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.threshold = settings.soft_bounce_threshold
        self.window = timedelta(hours=settings.soft_bounce_window_hours)
        self.soft_days = timedelta(days=settings.soft_bounce_suppress_days)
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
        entries: list[dict[str, Any]] = []
        soft: list[dict[str, Any]] = []
        soft_scope: dict[tuple[str, str], LoggedEvent] = {}
        for event in events:
            facts = facts_of(event)
            if facts is None:
                continue
            at = utc(event.position.event_at)
            source = event.position.dedupe_key.hex()
            bound = event.posted_by_tenant
            tenant = bound or facts.complaint_tenant
            if facts.complaint_recipients and tenant is not None and len(tenant) > 100:
                log.warning("complaint %s names a tenant longer than 100 characters: not suppressed", source)
                tenant, facts = None, None
            for address in facts.complaint_recipients if facts is not None else ():
                if _valid(address):
                    entries.append(_entry(address, tenant, SuppressionReason.complaint, at, None, source))
            observation = facts.observation if facts is not None else None
            if observation is None or not _valid(observation.recipient):
                continue
            if (
                observation.bounce_classification is BounceType.hard
                and observation.status is MessageQueueStatus.bounced
            ):
                entries.append(_entry(observation.recipient, bound, SuppressionReason.hard_bounce, at, None, source))
            elif observation.bounce_classification is BounceType.soft and observation.status in _SOFT_STATUSES:
                email = normalize_address(observation.recipient)
                scope = bound or ""
                soft.append({"scope": scope, "email": email, "dedupe_key": event.position.dedupe_key, "event_at": at})
                soft_scope[(scope, email)] = event
        if soft:
            entries += await self._past_threshold(session, soft, soft_scope)
        now = self.now()
        await upsert(session, [e for e in entries if e["expires_at"] is None or e["expires_at"] > now])

    async def _past_threshold(
        self,
        session: AsyncSession,
        soft: list[dict[str, Any]],
        scope: dict[tuple[str, str], LoggedEvent],
    ) -> list[dict[str, Any]]:
        """Entries for the addresses whose soft bounces, counted per scope (who posted them), reach the
        threshold within the window: a tenant's entry from its own key's events, a global one from the MTAs'."""
        insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        unique = {(r["scope"], r["email"], r["dedupe_key"]): r for r in soft}
        rows = [unique[k] for k in sorted(unique)]
        # One statement, its rows sent in batches by the driver (executemany); a multi-row VALUES was compiled
        # anew for every length.
        await session.execute(insert(SoftBounceRow.__table__).on_conflict_do_nothing(), rows)
        latest: dict[tuple[str, str], datetime] = {}
        for row in rows:
            key = (row["scope"], row["email"])
            latest[key] = max(latest.get(key, row["event_at"]), row["event_at"])
        # The soft bounces of a chunk of addresses within the widest of their windows, read in one query and
        # counted here per address and its own window: one count query per address was ~1 ms each, most of this
        # projection's time when deferrals are common (bench/projections.py: 5,159 queries for 50,000 events).
        c = SoftBounceRow.__table__.c
        counts: dict[tuple[str, str], int] = dict.fromkeys(latest, 0)
        keys = sorted(latest)
        for start in range(0, len(keys), SOFT_CHUNK):
            chunk = keys[start : start + SOFT_CHUNK]
            lasts = [latest[k] for k in chunk]
            stored = await session.execute(
                select(c.scope, c.email, c.event_at).where(
                    tuple_(c.scope, c.email).in_(chunk),
                    c.event_at > min(lasts) - self.window,
                    c.event_at <= max(lasts),
                )
            )
            for bound, email, at in stored:
                last = latest[(bound, email)]
                if last - self.window < utc(at) <= last:
                    counts[(bound, email)] += 1
        entries = []
        for (bound, email), last in sorted(latest.items()):
            if counts[(bound, email)] >= self.threshold:
                event = scope[(bound, email)]
                entries.append(
                    _entry(
                        email,
                        bound or None,
                        SuppressionReason.soft_bounce,
                        last,
                        last + self.soft_days,
                        event.position.dedupe_key.hex(),
                    )
                )
        return entries

    async def reset(self, session: AsyncSession) -> None:
        # What the projection made goes and comes back from the replay; operators' entries and removals
        # (tombstones, which keep removed automatic entries from coming back) stay.
        await session.execute(
            delete(SuppressionRow).where(
                SuppressionRow.created_by == PROJECTION_ACTOR, SuppressionRow.removed_at.is_(None)
            )
        )
        await session.execute(delete(SoftBounceRow))


def _entry(
    email: str,
    tenant: str | None,
    reason: SuppressionReason,
    at: datetime,
    expires_at: datetime | None,
    source: str,
) -> dict[str, Any]:
    return entry_row(
        email=normalize_address(email),
        tenant_id=tenant,
        reason=reason.value,
        created_at=at,
        expires_at=expires_at,
        created_by=PROJECTION_ACTOR,
        source_event_id=source,
    )
