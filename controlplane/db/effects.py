"""What mtactl did and what the nodes hold, written into the message mirror: the effects no log record reports.

A purge is sent with kumod's ``suppress_logging``, so no record ever tells the mirror its messages are gone: the
operation writes that here. (Suspensions, state of a queue rather than events of its messages, are written by the
node sync: ``controlplane.fleet.state.refresh_queue_states``.)
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.base import Target
from adapters.model import MessageQueueStatus
from controlplane.db.messages import IN_QUEUE
from controlplane.db.tables import MessageRow


def targeted(target: Target) -> list[ColumnElement[bool]]:
    """The mirror rows still queued that ``target`` selects, by the mirror's columns: what an operation's plan
    counts (``QueueQueryService.queued_in``) and what a purge marks."""
    c = MessageRow
    where: list[ColumnElement[bool]] = [c.status.in_(IN_QUEUE)]
    if target.everything:
        return where
    for column, value in (
        (c.domain, target.domain.lower() if target.domain else None),
        (c.tenant_id, target.tenant),
        (c.campaign_id, target.campaign),
        (c.routing_domain, target.routing_domain),
    ):
        if value is not None:
            where.append(column == value)
    if target.queue_names is not None:
        where.append(c.queue_name.in_(list(target.queue_names)))
    return where


async def record_purge(session: AsyncSession, target: Target, *, note: str) -> int:
    """Mark the queued messages a purge removed as cancelled; returns how many rows changed."""
    now = datetime.now(UTC)
    result = await session.execute(
        update(MessageRow)
        .where(*targeted(target))
        .values(
            status=MessageQueueStatus.cancelled.value,
            status_at=now,
            last_bounce_reason=note,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
