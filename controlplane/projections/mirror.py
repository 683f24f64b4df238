"""The message mirror (``message_queue``) as a projection of the event log.

One pass applies a batch of events as one upsert (two when tenant-bound keys posted some of them, which are
applied only to their tenant's messages): the observations of one message are merged first
(``controlplane.db.mirror.combine``), so each message is written once per pass however many of its events the
batch holds, and the merge rule is order-independent (a late event never moves a terminal message back).
``message_counts`` (and ``metrics_counts``, ``metrics_depths``) follow the mirror through their triggers, in the same
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.model.observation import MessageObservation
from controlplane.db.events import EVENTS, insert_dead_letters
from controlplane.db.messages import COLUMNS, TABLE
from controlplane.db.mirror import apply_observations
from controlplane.projections.facts import facts_of
from controlplane.projections.log import LoggedEvent

log = logging.getLogger("mtactl.projections")
TENANT_DECLINED = (
    "not applied to the mirror: the message belongs to another tenant (the event of a tenant-bound key, stored in "
    "the log, raced with that tenant's)"
)


class MirrorProjection:
    name = "mirror"

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None:
        unbound: list[MessageObservation] = []
        bound: list[tuple[LoggedEvent, MessageObservation]] = []
        for event in events:
            if event.message_uuid is None:  # no message: nothing to mirror, no need to decode it
                continue
            facts = facts_of(event)
            if facts is None or facts.observation is None:
                continue
            if event.posted_by_tenant is None:
                unbound.append(facts.observation)
            else:
                bound.append((event, facts.observation))
        await apply_observations(session, unbound)
        if not bound:
            return
        # A tenant-bound key's event touches only its own tenant's message: the ingest check refused those it
        # could see; one that raced past it with another tenant's event is not applied, and is kept where an
        # operator looks for what did not go in.
        declined = await apply_observations(session, [o for _, o in bound], same_tenant_only=True)
        refused = [event for event, observation in bound if observation.id in declined]
        if refused:
            log.warning(
                "mirror: %d events of tenant-bound keys about another tenant's message not applied", len(refused)
            )
            await insert_dead_letters(
                session,
                [
                    {
                        "received_at": datetime.now(UTC),
                        "source": event.source,
                        "error": TENANT_DECLINED,
                        "payload": event.payload,
                        "api_key": None,
                    }
                    for event in refused
                ],
            )

    async def reset(self, session: AsyncSession) -> None:
        # Every message the log describes goes and comes back from the replay; messages the log does not hold
        # (imported from the legacy model, or whose events are past the retention) stay as they are.
        logged = select(EVENTS.c.message_uuid).where(EVENTS.c.message_uuid.is_not(None))
        await session.execute(delete(TABLE).where(COLUMNS.id.in_(logged)))
