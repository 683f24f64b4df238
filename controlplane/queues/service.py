"""Queries over the mirrored queue. Takes plain arguments, returns Structs."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import Target
from adapters.model import (
    BounceType,
    DomainHealthScore,
    MessageQueueItem,
    MessageQueueStatus,
    QueueFilter,
    QueueMetrics,
    QueueName,
    QueueSortField,
    QueueState,
    assume_utc,
)
from controlplane.db.effects import targeted
from controlplane.db.messages import COLUMNS, IN_QUEUE, TABLE, filter_conditions, ordered_page, row_to_message
from controlplane.db.tables import NodeHoldRow, NodeQueuesRow, NodeRow
from controlplane.errors import InvalidInput, NotFound
from controlplane.fleet.state import hold_matches
from controlplane.pagination import decode_cursor, encode_cursor
from controlplane.queues.schema import MessagePage, NodeQueueCount, QueueList, QueueSummary, ReadyQueueSummary

# Offset paging reads and discards every skipped row, so it is kept for shallow pages only; cursors go anywhere.
MAX_OFFSET = 10_000
# Bounded breakdowns keep the metrics response small on fleets with hundreds of thousands of domains.
TOP_BREAKDOWN = 100
# When a queue's messages disagree about the queue state, the most restrictive one is reported.
STATE_SEVERITY = [QueueState.disabled, QueueState.suspended, QueueState.draining, QueueState.active]


class Cursor(msgspec.Struct, array_like=True):
    sort_by: QueueSortField
    sort_order: str
    value: Any
    id: uuid.UUID

    def encode(self) -> str:
        return encode_cursor(self)

    @classmethod
    def decode(cls, text: str, query: QueueFilter) -> tuple[Any, uuid.UUID]:
        cursor = decode_cursor(text, cls)
        if cursor.sort_by != query.effective_sort_by() or cursor.sort_order != query.sort_order:
            raise InvalidInput("cursor was issued for another sort_by/sort_order", field="cursor")
        value = cursor.value
        if value is not None and cursor.sort_by in (QueueSortField.created_at, QueueSortField.scheduled_at):
            try:
                value = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise InvalidInput("cursor is not one this API issued", field="cursor") from None
        return value, cursor.id


def check_filter(query: QueueFilter) -> bool:
    """Cross-field checks msgspec cannot express (each names the field at fault); False when a range is empty.

    An inverted range (``min_attempts=5&max_attempts=2``) is not an error: it is an empty range, matching
    nothing. (The schema cannot say one parameter must not exceed another, so refusing it would refuse a
    request the contract calls valid.)"""
    satisfiable = True
    pairs = [
        ("created_after", "created_before"),
        ("scheduled_after", "scheduled_before"),
        ("min_attempts", "max_attempts"),
        ("min_size_bytes", "max_size_bytes"),
    ]
    for low, high in pairs:
        a, b = getattr(query, low), getattr(query, high)
        if a is not None and b is not None:
            if isinstance(a, datetime) and isinstance(b, datetime):
                a, b = assume_utc(a), assume_utc(b)
            if a > b:
                satisfiable = False
    if query.offset is not None and query.offset > MAX_OFFSET:
        raise InvalidInput(f"offset may be at most {MAX_OFFSET}; page deeper with cursor", field="offset")
    return satisfiable


class QueueQueryService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_messages(self, query: QueueFilter, *, cursor: str | None = None) -> MessagePage:
        satisfiable = check_filter(query)
        if cursor and query.offset:
            raise InvalidInput("use either cursor or offset, not both", field="offset")
        after = Cursor.decode(cursor, query) if cursor else None
        if not satisfiable:
            return MessagePage(data=[], cursor=None, has_more=False)
        async with self._sessions() as session:
            dialect = session.get_bind().dialect.name
            base = select(TABLE).where(*filter_conditions(query, dialect=dialect))
            sort_by = query.effective_sort_by()
            statement = ordered_page(base, sort_by, query.sort_order == "desc", after, query.limit + 1)
            if query.offset and not cursor:
                statement = statement.offset(query.offset)
            rows = (await session.execute(statement)).all()
        has_more = len(rows) > query.limit
        messages = [row_to_message(r) for r in rows[: query.limit]]
        next_cursor = None
        if has_more:
            last = messages[-1]
            value = getattr(last, sort_by.value)
            next_cursor = Cursor(
                sort_by=sort_by,
                sort_order=query.sort_order,
                value=value.isoformat() if isinstance(value, datetime) else value,
                id=last.id,
            ).encode()
        return MessagePage(data=messages, cursor=next_cursor, has_more=has_more)

    async def get_message(self, message_id: uuid.UUID, *, tenant_id: str | None = None) -> MessageQueueItem:
        statement = select(TABLE).where(COLUMNS.id == message_id)
        if tenant_id is not None:
            statement = statement.where(COLUMNS.tenant_id == tenant_id)
        async with self._sessions() as session:
            row = (await session.execute(statement)).first()
        if row is None:  # another tenant's message is "not found", not "forbidden": its existence is not revealed
            raise NotFound(f"no message {message_id}", field="id")
        return row_to_message(row)

    async def queued_in(self, target: Target) -> tuple[int, list[str]]:
        """Messages still queued for a target, and their queue names: what an operation on it would affect."""
        c = COLUMNS
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(c.queue_name, func.count()).where(*targeted(target)).group_by(c.queue_name)
                )
            ).all()
        return sum(n for _, n in rows), sorted(name for name, _ in rows)

    async def list_queues(self, *, tenant_id: str | None = None) -> QueueList:
        """Every queue the mirror or a node knows, with mirrored counts, per-node counts and matching holds.

        A tenant-bound caller sees its own queues only, and no ready queues (egress paths are shared by tenants).
        """
        c = COLUMNS
        statement = select(c.queue_name, c.status, c.queue_state, func.count()).group_by(
            c.queue_name, c.status, c.queue_state
        )
        if tenant_id is not None:
            statement = statement.where(c.tenant_id == tenant_id)
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
            node_queues = (
                await session.execute(
                    select(NodeQueuesRow, NodeRow.name).join(NodeRow, NodeRow.id == NodeQueuesRow.node_id)
                )
            ).all()
            holds = (
                (
                    await session.execute(
                        select(NodeHoldRow)
                        .join(NodeRow, NodeRow.id == NodeHoldRow.node_id)
                        .order_by(NodeHoldRow.hold_id)
                    )
                )
                .scalars()
                .all()
            )
        counts: dict[str, dict[MessageQueueStatus, int]] = defaultdict(lambda: dict.fromkeys(MessageQueueStatus, 0))
        states: dict[str, set[QueueState]] = defaultdict(set)
        for queue_name, status, state, count in rows:
            counts[queue_name][MessageQueueStatus(status)] += count
            states[queue_name].add(QueueState(state))
        on_nodes: dict[str, list[NodeQueueCount]] = defaultdict(list)
        ready: list[ReadyQueueSummary] = []
        ready_suspensions: dict[tuple[uuid.UUID, str], list[str]] = defaultdict(list)
        scheduled_holds = []
        for hold in holds:
            if hold.ready_queue is not None:
                ready_suspensions[(hold.node_id, hold.ready_queue)].append(hold.hold_id)
            else:
                scheduled_holds.append(hold)
        for queues, node_name in node_queues:
            for queue_name, count in queues.scheduled.items():
                on_nodes[queue_name].append(NodeQueueCount(node=node_name, node_id=queues.node_id, scheduled=count))
            if tenant_id is not None:
                continue
            for queue_name, count in queues.ready.items():
                suspended_by = ready_suspensions.get((queues.node_id, queue_name), [])
                ready.append(
                    ReadyQueueSummary(
                        name=queue_name,
                        node=node_name,
                        node_id=queues.node_id,
                        ready=count,
                        queue_state=QueueState.suspended if suspended_by else QueueState.active,
                        suspended_by=suspended_by,
                    )
                )
        summaries = []
        for queue_name in sorted(counts.keys() | on_nodes.keys()):
            parts = QueueName.parse(queue_name)  # once per queue, however many nodes hold it
            if tenant_id is not None and parts.tenant != tenant_id:
                # Another tenant's queue on the nodes: kept only if the mirror counts it as this tenant's.
                if queue_name not in counts:
                    continue
                on_nodes.pop(queue_name, None)
            matching = [h for h in scheduled_holds if hold_matches(h, parts, queue_name)]
            suspended_by = sorted({h.hold_id for h in matching if h.kind == "suspension"})
            if suspended_by:
                states[queue_name].add(QueueState.suspended)
            by_status = counts.get(queue_name) or dict.fromkeys(MessageQueueStatus, 0)
            nodes = sorted(on_nodes.get(queue_name, []), key=lambda n: n.node)
            summaries.append(
                QueueSummary(
                    queue_name=queue_name,
                    domain=parts.domain,
                    tenant_id=parts.tenant,
                    campaign_id=parts.campaign,
                    queue_state=next((s for s in STATE_SEVERITY if s in states[queue_name]), QueueState.active),
                    total=sum(by_status.values()),
                    messages_by_status=by_status,
                    scheduled=sum(n.scheduled for n in nodes),
                    nodes=nodes,
                    suspended_by=suspended_by,
                    bounced_by=sorted({h.hold_id for h in matching if h.kind == "bounce"}),
                )
            )
        ready.sort(key=lambda r: (r.name, r.node))
        return QueueList(data=summaries, ready_queues=ready)

    async def metrics(
        self,
        *,
        tenant_id: str | None = None,
        campaign_id: str | None = None,
        domain: str | None = None,
        now: datetime | None = None,
    ) -> QueueMetrics:
        """QueueMetrics over the messages matching the optional filters; see README "Metrics" for definitions."""
        now = now or datetime.now(UTC)
        c = COLUMNS
        scope: list[ColumnElement[bool]] = []
        if tenant_id is not None:
            scope.append(c.tenant_id == tenant_id)
        if campaign_id is not None:
            scope.append(c.campaign_id == campaign_id)
        if domain is not None:
            scope.append(c.domain == domain.lower())
        queued = c.status.in_(IN_QUEUE)
        delivered = c.status == MessageQueueStatus.delivered.value
        async with self._sessions() as session:
            epoch = _epoch_seconds(session.get_bind().dialect.name)
            now_s = now.timestamp()
            totals = (
                await session.execute(
                    select(
                        func.count(),
                        func.coalesce(func.sum(case((c.num_attempts > 1, c.num_attempts - 1), else_=0)), 0),
                        func.count().filter(c.num_attempts > 1),
                        func.count().filter(c.created_at >= now - timedelta(hours=1)),
                        func.count().filter(c.created_at >= now - timedelta(hours=24)),
                        func.count().filter(c.created_at >= now - timedelta(days=7)),
                        func.count().filter(and_(delivered, c.delivered_at >= now - timedelta(hours=1))),
                        func.avg(epoch(c.delivered_at) - epoch(c.created_at)).filter(delivered),
                        func.coalesce(func.sum(c.size_bytes).filter(queued), 0),
                        func.avg(now_s - epoch(c.created_at)).filter(queued),
                        func.min(c.created_at).filter(queued),
                        func.max(c.created_at).filter(queued),
                    ).where(*scope)
                )
            ).one()
            by_status = dict.fromkeys(MessageQueueStatus, 0)
            for status, count in await session.execute(select(c.status, func.count()).where(*scope).group_by(c.status)):
                by_status[MessageQueueStatus(status)] = count
            by_bounce = dict.fromkeys(BounceType, 0)
            bounce_rows = await session.execute(
                select(c.bounce_classification, func.count())
                .where(*scope, c.bounce_classification.is_not(None))
                .group_by(c.bounce_classification)
            )
            for kind, count in bounce_rows:
                by_bounce[BounceType(kind)] = count
            depth_by_domain = await _top_counts(session, c.domain, [*scope, queued])
            depth_by_campaign = await _top_counts(session, c.campaign_id, [*scope, queued, c.campaign_id.is_not(None)])
            health = await _domain_health(session, scope, epoch)
        (
            total,
            retries,
            retried,
            last_hour,
            last_day,
            last_week,
            delivered_hour,
            avg_delivery,
            size,
            avg_age,
            oldest,
            newest,
        ) = totals
        return QueueMetrics(
            total_messages=total,
            messages_by_status=by_status,
            average_queue_time=float(avg_age or 0.0),
            average_delivery_time=float(avg_delivery or 0.0),
            delivery_rate=float(delivered_hour),
            queue_depth=sum(by_status[MessageQueueStatus(s)] for s in IN_QUEUE),
            queue_depth_by_domain=depth_by_domain,
            queue_depth_by_campaign=depth_by_campaign,
            total_retries=int(retries),
            retry_rate=_percent(retried, total),
            bounce_rate=_percent(by_status[MessageQueueStatus.bounced], total),
            bounces_by_type=by_bounce,
            domain_health_scores=health,
            messages_last_hour=last_hour,
            messages_last_24h=last_day,
            messages_last_7d=last_week,
            total_size_bytes=int(size),
            oldest_message_age=(now - oldest).total_seconds() if oldest else 0.0,
            newest_message_age=(now - newest).total_seconds() if newest else 0.0,
        )


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


def _epoch_seconds(dialect: str) -> Any:
    if dialect == "postgresql":
        return lambda column: func.extract("epoch", column)
    return lambda column: (func.julianday(column) - 2440587.5) * 86400.0


async def _top_counts(session: AsyncSession, column: Any, where: list[ColumnElement[bool]]) -> dict[str, int]:
    rows = await session.execute(
        select(column, func.count().label("n"))
        .where(*where)
        .group_by(column)
        .order_by(func.count().desc())
        .limit(TOP_BREAKDOWN)
    )
    return {key: n for key, n in rows}


async def _domain_health(
    session: AsyncSession, scope: list[ColumnElement[bool]], epoch: Any
) -> dict[str, DomainHealthScore]:
    """Per-domain outcome scores for the busiest domains.

    score = 100 * (1 - (bounced + expired + deferred/2) / (delivered + bounced + expired + deferred)): a domain that
    takes everything scores 100, one that refuses everything scores 0, deferrals count half.
    """
    c = COLUMNS
    status = MessageQueueStatus
    delivered = c.status == status.delivered.value
    rows = await session.execute(
        select(
            c.domain,
            func.count().filter(delivered),
            func.count().filter(c.status == status.bounced.value),
            func.count().filter(c.status == status.expired.value),
            func.count().filter(c.status == status.deferred.value),
            func.avg(epoch(c.delivered_at) - epoch(c.created_at)).filter(delivered),
            func.max(c.delivered_at).filter(delivered),
        )
        .where(*scope)
        .group_by(c.domain)
        .order_by(func.count().desc())
        .limit(TOP_BREAKDOWN)
    )
    scores: dict[str, DomainHealthScore] = {}
    for domain, ok, bounced, expired, deferred, avg_delivery, last_ok in rows:
        outcomes = ok + bounced + expired + deferred
        penalty = (bounced + expired + 0.5 * deferred) / outcomes if outcomes else 0.0
        scores[domain] = DomainHealthScore(
            domain=domain,
            score=round(100.0 * (1.0 - penalty), 2),
            bounce_rate=_percent(bounced, outcomes),
            average_delivery_time=float(avg_delivery or 0.0),
            last_successful_delivery=last_ok,
        )
    return scores
