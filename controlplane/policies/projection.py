"""``policy_matches``: per minute, how many events' responses matched each ``response_match`` rule, per value of
the rule's scope. The rollups count record types, not response text, and reading the events of a window again
every 30 seconds would scan the log; this projection reads each event once, as it is applied.

A rule counts the events applied after it was created (the projection does not go back for it); deleting a rule
deletes its counts.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.model.events import EventFacts
from controlplane.db.tables import PolicyMatchRow, PolicyRow
from controlplane.policies.patterns import matches
from controlplane.projections.facts import facts_of
from controlplane.projections.log import LoggedEvent
from controlplane.projections.rollups import VALUE_WIDTH, minute_of

MATCHES: Table = PolicyMatchRow.__table__  # type: ignore[assignment]


def response_text(facts: EventFacts | None) -> str | None:
    """What a pattern is searched in: "<code> <enhanced code> <message>" as the receiver replied (or the MTA's
    reason for a failure without a reply)."""
    observation = facts.observation if facts else None
    if observation is None:
        return None
    reply = observation.smtp_response
    if reply is not None:
        return " ".join(str(part) for part in (reply.code, reply.enhanced_code, reply.message) if part)
    return observation.last_bounce_reason


def scope_value(scope: str, event: LoggedEvent, facts: EventFacts | None) -> str | None:
    if scope == "domain":
        return event.domain or None
    if scope == "tenant":
        return event.tenant_id
    if scope == "campaign":
        return event.campaign_id
    if scope == "egress_source":
        return facts.egress_source if facts else None
    if scope == "node":
        return facts.node if facts else None
    return None


class PolicyMatchProjection:
    name = "policy_matches"

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
        rules = (
            await session.execute(
                select(PolicyRow.id, PolicyRow.scope, PolicyRow.pattern, PolicyRow.match).where(
                    PolicyRow.metric == "response_match", PolicyRow.pattern.is_not(None)
                )
            )
        ).all()
        if not rules:
            return
        counts: Counter[tuple[uuid.UUID, str, datetime]] = Counter()
        for event in events:
            facts = facts_of(event)
            text = response_text(facts)
            if not text:
                continue
            for rule_id, scope, pattern, match in rules:
                value = scope_value(scope, event, facts)
                if value is None or (match and match.get(scope) not in (None, value)):
                    continue
                if matches(pattern, text):
                    counts[(rule_id, value[:VALUE_WIDTH], minute_of(event.position.event_at))] += 1
        if not counts:
            return
        rows = [
            {"policy_id": p, "scope_value": v, "minute": m, "events": n}
            for (p, v, m), n in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2]))
        ]
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert(MATCHES)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[MATCHES.c.policy_id, MATCHES.c.scope_value, MATCHES.c.minute],
                set_={"events": MATCHES.c.events + statement.excluded.events},
            ),
            rows,
        )

    async def reset(self, session: AsyncSession) -> None:
        await session.execute(delete(MATCHES))
