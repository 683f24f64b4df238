"""Queries over the mirrored queue. Takes plain arguments, returns Structs."""

from __future__ import annotations

import contextlib
import heapq
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, Table, Text, and_, cast, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import MessageRef, Target
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
from adapters.model.observation import MTA_MESSAGE_ID
from adapters.sources import DELIVERED_TYPES, RECEIVED_TYPES
from controlplane.db.effects import targeted
from controlplane.db.engine import query_cancelled
from controlplane.db.messages import COLUMNS, IN_QUEUE, TABLE, filter_conditions, ordered_page, row_to_message
from controlplane.db.tables import (
    COUNTED_SUMS,
    DomainScoreRow,
    MessageCountRow,
    MetricsCountRow,
    MetricsDepthRow,
    NodeHoldRow,
    NodeMessageRow,
    NodeQueuesRow,
    NodeRow,
)
from controlplane.errors import InvalidInput, NotFound, QueryTooBroad
from controlplane.fleet.state import hold_matches
from controlplane.pagination import decode_cursor, encode_cursor
from controlplane.projections.rollups import ROLLUPS, minute_of
from controlplane.queues.schema import (
    QUEUE_PAGE_DEFAULT,
    QUEUE_PAGE_MAX,
    MessagePage,
    NodeQueueCount,
    PlannedMessage,
    QueueList,
    QueueSummary,
    ReadyQueueSummary,
)

COUNTS: Table = MessageCountRow.__table__  # type: ignore[assignment]
METRICS_COUNTS: Table = MetricsCountRow.__table__  # type: ignore[assignment]
METRICS_DEPTHS: Table = MetricsDepthRow.__table__  # type: ignore[assignment]
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


class QueueCursor(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Where a page of queues ended: its last queue name (the next page starts after it)."""

    after: str

    def encode(self) -> str:
        return encode_cursor(self)


# A node's document of queue counts (scheduled or ready), read as text and decoded by msgspec: at 100 nodes of
# 2,000 queues, 76 ms against 102 ms through the JSON column's json.loads.
DOCUMENT = msgspec.json.Decoder(dict[str, int])


def _named_for(queue_name: str, tenant: str) -> bool:
    """Whether a queue's name names this tenant (``QueueName.parse``): a substring test first, since every name of
    every node's document is tested and a name of the tenant holds ``tenant@``."""
    return f"{tenant}@" in queue_name and QueueName.parse(queue_name).tenant == tenant


async def _counted_after(
    session: AsyncSession, scope: list[ColumnElement[bool]], after: str | None, wanted: int
) -> list[Any]:
    """Every row of the counters (name, status, state, messages) of the first ``wanted`` queue names after
    ``after`` within ``scope``: the rows in key order, an index range (the primary key's, or a tenant's index).

    Rows, not names grouped in SQL: without the table's statistics (never analyzed, as in the benchmark's database)
    ``GROUP BY queue_name ORDER BY queue_name LIMIT n`` is planned as a scan and hash of the whole table (337 ms
    at 480,000 rows) where ``ORDER BY … LIMIT`` always walks the index (1.2 ms). A batch's last name may go on
    past it, so it is read again, whole, with the next batch.
    """
    n = COUNTS.c
    rows: list[Any] = []
    lower, inclusive, batch_size = after, False, 4 * wanted  # ~2 rows per queue in a realistic mirror
    while True:
        where = list(scope)
        if lower is not None:
            where.append(n.queue_name >= lower if inclusive else n.queue_name > lower)
        statement = (
            select(n.queue_name, n.status, n.queue_state, n.messages)
            .where(*where)
            .order_by(n.queue_name)
            .limit(batch_size)
        )
        batch = (await session.execute(statement)).all()
        if len(batch) < batch_size:  # the end of the range: every name in it is whole
            rows += batch
            break
        last = batch[-1][0]
        rows += [row for row in batch if row[0] != last]
        if len({row[0] for row in rows}) >= wanted:
            break
        lower, inclusive, batch_size = last, True, batch_size * 2  # doubled: one name may have many rows
    names = sorted({row[0] for row in rows})[:wanted]
    return [row for row in rows if row[0] <= names[-1]] if names else []


def _too_broad(query: QueueFilter, timeout_ms: int) -> QueryTooBroad:
    sort_by = query.effective_sort_by()
    narrower = (
        "sort by created_at (the order every filter index keeps)"
        if sort_by is not QueueSortField.created_at
        else "add a filter on status, domain, tenant_id, campaign_id, queue_name, recipient or sender, or a "
        "created_after/created_before range"
    )
    return QueryTooBroad(
        f"this listing ran longer than {timeout_ms} ms and was stopped: narrow it ({narrower})",
        field="sort_by" if sort_by is not QueueSortField.created_at else None,
    )


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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, listing_timeout_ms: int = 900) -> None:
        self._sessions = sessions
        self._listing_timeout_ms = listing_timeout_ms

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
            if dialect == "postgresql":
                # A combination no index serves could scan millions of rows: it is stopped, not left to run.
                await session.execute(text(f"SET LOCAL statement_timeout = {int(self._listing_timeout_ms)}"))
            try:
                rows = (await session.execute(statement)).all()
            except Exception as exc:
                if query_cancelled(exc):
                    raise _too_broad(query, self._listing_timeout_ms) from None
                raise
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

    async def messages_named(
        self, message_ids: list[str], *, tenant: str | None = None
    ) -> tuple[tuple[MessageRef, ...], dict[str, int], list[uuid.UUID]]:
        """The queued messages a per-message operation names, as their MTAs know them (the MTA's own id where the
        mirror keeps one, ``MTA_MESSAGE_ID``), how many per queue, and their mirrored ids. An id is a mirrored
        message's ``id`` or a Message-ID (every recipient of it); with ``tenant``, only that tenant's messages are
        found. An id that finds no queued message is refused, naming it."""
        c = COLUMNS
        wanted = list(dict.fromkeys(message_ids))
        by_uuid: dict[uuid.UUID, str] = {}
        for value in wanted:
            with contextlib.suppress(ValueError):  # not a uuid: a Message-ID
                by_uuid[uuid.UUID(value)] = value
        found: dict[uuid.UUID, tuple[MessageRef, str]] = {}
        matched: set[str] = set()
        async with self._sessions() as session:
            for column, values in ((c.id, list(by_uuid)), (c.message_id, wanted)):
                for start in range(0, len(values), 500):  # bounded IN lists (SQLite's parameter limit)
                    statement = select(c.id, c.message_id, c.recipient, c.queue_name, c.metadata).where(
                        column.in_(values[start : start + 500]), c.status.in_(IN_QUEUE)
                    )
                    if tenant is not None:
                        statement = statement.where(c.tenant_id == tenant)
                    for row_id, message_id, recipient, queue_name, metadata in await session.execute(statement):
                        mta_id = (metadata or {}).get(MTA_MESSAGE_ID) if isinstance(metadata, dict) else None
                        found[row_id] = (MessageRef(str(mta_id or message_id), recipient), queue_name)
                        matched.update((by_uuid.get(row_id, ""), message_id))
        unknown = [value for value in wanted if value not in matched]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise InvalidInput(f"no queued message {shown} (as mirrored)", field="message_ids")
        per_queue: dict[str, int] = defaultdict(int)
        for _, queue_name in found.values():
            per_queue[queue_name] += 1
        refs = tuple(sorted({ref for ref, _ in found.values()}, key=lambda r: (r.mta_message_id, r.recipient)))
        return refs, dict(per_queue), sorted(found)

    async def listed_on(
        self, node_id: uuid.UUID, target: Target, message_uuids: list[uuid.UUID] | None, *, limit: int
    ) -> tuple[list[PlannedMessage], int] | None:
        """The queued messages a node listed at its last sync (``node_messages``) that the target (or the mirrored
        messages named) selects: the first ``limit`` and how many in all; None for a node that does not list its
        queue."""
        c = COLUMNS
        n = NodeMessageRow
        async with self._sessions() as session:
            if not await session.scalar(select(n.node_id).where(n.node_id == node_id).limit(1)):
                return None
            joined = select(c.id, c.recipient, c.status).join(n, n.message_uuid == c.id).where(n.node_id == node_id)
            if message_uuids is None:
                statement = joined.where(*targeted(target))
                total = await session.scalar(select(func.count()).select_from(statement.subquery()))
                rows = list((await session.execute(statement.order_by(c.recipient).limit(limit))).all())
            else:
                rows, total = [], 0
                for start in range(0, len(message_uuids), 500):  # bounded IN lists
                    batch = message_uuids[start : start + 500]
                    found = (await session.execute(joined.where(c.id.in_(batch), c.status.in_(IN_QUEUE)))).all()
                    total += len(found)
                    rows += found
                rows = sorted(rows, key=lambda r: r.recipient)[:limit]
        return [PlannedMessage(id=i, recipient=r, status=s) for i, r, s in rows], int(total or 0)

    async def list_queues(
        self, *, tenant_id: str | None = None, limit: int = QUEUE_PAGE_DEFAULT, cursor: str | None = None
    ) -> QueueList:
        """One page of the queues the mirror or a node knows, by queue name (code point order), with mirrored
        counts, per-node counts and matching holds; ``cursor`` (from the previous page) starts after its last
        queue. The ready queues come with the first page only.

        A tenant-bound caller sees its own queues only, and no ready queues (egress paths are shared by tenants):
        the queues the mirror counts as its messages, and those the nodes report under a name of its tenant.

        A page reads the counters' rows of the first ``limit + 1`` names after the cursor, an index range
        (``_counted_after``), and merges those names with the first ``limit + 1`` the nodes report after it: O(limit)
        in the counters (~9 ms a page at 250,000 queues), plus one read of the nodes' documents, one per node as
        the sync writes them (~90 ms at 100 nodes of 2,000 queues).
        """
        if not 1 <= limit <= QUEUE_PAGE_MAX:
            raise InvalidInput(f"limit must be between 1 and {QUEUE_PAGE_MAX}", field="limit")
        after = decode_cursor(cursor, QueueCursor).after if cursor else None
        n = COUNTS.c
        # Rows of zero are kept by the triggers (a message that changed status leaves one behind): a queue whose
        # rows are all zero is gone from the mirror, and listed only while a node reports it.
        scope = [n.messages != 0]
        if tenant_id is not None:
            scope.append(n.tenant_id == tenant_id)

        def documents(column: Any) -> Any:
            return select(NodeQueuesRow.node_id, NodeRow.name, cast(column, Text)).join(
                NodeRow, NodeRow.id == NodeQueuesRow.node_id
            )

        async with self._sessions() as session:
            rows = await _counted_after(session, scope, after, limit + 1)
            scheduled = [
                (node_id, node, DOCUMENT.decode(document))
                for node_id, node, document in await session.execute(documents(NodeQueuesRow.scheduled))
            ]
            with_ready = not cursor and tenant_id is None
            ready_documents = (await session.execute(documents(NodeQueuesRow.ready))).all() if with_ready else []
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
        reported = heapq.nsmallest(
            limit + 1,
            {
                name
                for _, _, queues in scheduled
                for name in queues
                if (after is None or name > after) and (tenant_id is None or _named_for(name, tenant_id))
            },
        )
        # Both are the first limit + 1 names of their kind after the cursor, so the page's names (the first limit)
        # are the first of their union, and every counted one has all its rows read.
        page = sorted(counts.keys() | set(reported))[: limit + 1]
        has_more = len(page) > limit
        page = page[:limit]
        on_nodes: dict[str, list[NodeQueueCount]] = defaultdict(list)
        for node_id, node, queues in scheduled:
            for queue_name in page:
                count = queues.get(queue_name)
                if count is not None:
                    on_nodes[queue_name].append(NodeQueueCount(node=node, node_id=node_id, scheduled=count))
        ready_suspensions: dict[tuple[uuid.UUID, str], list[str]] = defaultdict(list)
        scheduled_holds = []
        for hold in holds:
            if hold.ready_queue is not None:
                ready_suspensions[(hold.node_id, hold.ready_queue)].append(hold.hold_id)
            else:
                scheduled_holds.append(hold)
        ready: list[ReadyQueueSummary] = []
        for node_id, node, document in ready_documents:
            for queue_name, count in DOCUMENT.decode(document).items():
                suspended_by = ready_suspensions.get((node_id, queue_name), [])
                ready.append(
                    ReadyQueueSummary(
                        name=queue_name,
                        node=node,
                        node_id=node_id,
                        ready=count,
                        queue_state=QueueState.suspended if suspended_by else QueueState.active,
                        suspended_by=suspended_by,
                    )
                )
        summaries = []
        for queue_name in page:
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
            on_node = sorted(on_nodes.get(queue_name, []), key=lambda c: c.node)
            summaries.append(
                QueueSummary(
                    queue_name=queue_name,
                    domain=parts.domain,
                    tenant_id=parts.tenant,
                    campaign_id=parts.campaign,
                    queue_state=next((s for s in STATE_SEVERITY if s in states[queue_name]), QueueState.active),
                    total=sum(by_status.values()),
                    messages_by_status=by_status,
                    scheduled=sum(c.scheduled for c in on_node),
                    nodes=on_node,
                    suspended_by=suspended_by,
                    bounced_by=sorted({h.hold_id for h in matching if h.kind == "bounce"}),
                )
            )
        ready.sort(key=lambda r: (r.name, r.node))
        next_cursor = QueueCursor(after=page[-1]).encode() if has_more else None
        return QueueList(data=summaries, ready_queues=ready, cursor=next_cursor, has_more=has_more)

    async def metrics(
        self,
        *,
        tenant_id: str | None = None,
        campaign_id: str | None = None,
        domain: str | None = None,
        now: datetime | None = None,
    ) -> QueueMetrics:
        """QueueMetrics over the messages matching the optional filters; see README "Metrics" for definitions.

        Counts and sums come from the counters the mirror's triggers keep (``metrics_counts`` and
        ``metrics_depths``, or ``message_counts`` for a combination of filters), the time windows from the
        per-minute ``event_rollups``, the oldest and newest queued message from an index of queued messages:
        nothing here scans the mirror."""
        now = now or datetime.now(UTC)
        async with self._sessions() as session:
            totals, domains, campaigns = await _counted(session, tenant_id, campaign_id, domain)
            oldest, newest = await _queued_age_bounds(session, tenant_id, campaign_id, domain)
            windows = await _windows(session, now, tenant_id=tenant_id, campaign_id=campaign_id, domain=domain)
            health = await _domain_health(session, tenant_id, campaign_id, domain)
        by_status = dict.fromkeys(MessageQueueStatus, 0)
        by_bounce = dict.fromkeys(BounceType, 0)
        total = retries = retried = size = queued_messages = queued_created = delivered_messages = delivery_ms = 0
        for state_name, bounce, messages, size_bytes, retry, retrying, created, delivery in totals:
            state = MessageQueueStatus(state_name)
            messages = int(messages)
            total += messages
            retries += int(retry)
            retried += int(retrying)
            by_status[state] += messages
            if bounce:
                by_bounce[BounceType(bounce)] += messages
            if state.value in IN_QUEUE:
                size += int(size_bytes)
                queued_messages += messages
                queued_created += int(created)
            if state is MessageQueueStatus.delivered:
                delivered_messages += messages
                delivery_ms += int(delivery)
        depth_by_domain = {dom: int(queued_here) for dom, queued_here in domains}
        depth_by_campaign = {campaign: int(messages) for campaign, messages in campaigns}
        received_hour, received_day, received_week, delivered_hour = windows
        return QueueMetrics(
            total_messages=total,
            messages_by_status=by_status,
            average_queue_time=max(0.0, now.timestamp() - queued_created / queued_messages) if queued_messages else 0.0,
            average_delivery_time=delivery_ms / delivered_messages / 1000.0 if delivered_messages else 0.0,
            delivery_rate=float(delivered_hour),
            queue_depth=sum(by_status[MessageQueueStatus(s)] for s in IN_QUEUE),
            queue_depth_by_domain=_top(depth_by_domain),
            queue_depth_by_campaign=_top(depth_by_campaign),
            total_retries=retries,
            retry_rate=_percent(retried, total),
            bounce_rate=_percent(by_status[MessageQueueStatus.bounced], total),
            bounces_by_type=by_bounce,
            domain_health_scores=health,
            messages_last_hour=received_hour,
            messages_last_24h=received_day,
            messages_last_7d=received_week,
            total_size_bytes=size,
            oldest_message_age=(now - oldest).total_seconds() if oldest else 0.0,
            newest_message_age=(now - newest).total_seconds() if newest else 0.0,
        )


CountedRows = tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]], Sequence[Sequence[Any]]]


async def _counted(
    session: AsyncSession, tenant_id: str | None, campaign_id: str | None, domain: str | None
) -> CountedRows:
    """The metrics' counts in scope: (status, bounce class, messages and the sums) rows, (domain, queued) rows and
    (campaign, queued) rows. The fleet and one tenant, domain or campaign read the counters not keyed by queue (a
    few rows per tenant, domain or campaign); a combination of filters reads ``message_counts``, the only counters
    that hold one."""
    given = [
        (dimension, value)
        for dimension, value in (
            ("tenant", tenant_id),
            ("domain", domain.lower() if domain is not None else None),
            ("campaign", campaign_id),
        )
        if value is not None
    ]
    # Messages without a campaign are in no pair row (no breakdown by campaign shows them): their depth by domain
    # is counted by queue, as a combination of filters is.
    if len(given) > 1 or campaign_id == "":
        return await _counted_by_queue(session, tenant_id, campaign_id, domain)
    m = METRICS_COUNTS.c
    queued = m.status.in_(IN_QUEUE)
    # The fleet adds up every tenant's rows: each message is counted once per dimension.
    dimension, value = given[0] if given else ("tenant", None)
    scope = [m.dimension == dimension, *([m.value == value] if value is not None else []), m.messages != 0]
    totals = (await session.execute(_totals(m, scope))).all()

    async def depths(breakdown: str) -> Sequence[Sequence[Any]]:
        if not given or dimension == breakdown:  # the fleet's, or the one domain's or campaign's own
            own = select(m.value, func.sum(m.messages)).where(m.dimension == breakdown, queued, m.messages != 0)
            if given:
                own = own.where(m.value == value)
            if breakdown == "campaign":  # messages without a campaign are in no campaign's depth
                own = own.where(m.value != "")
            return (await session.execute(own.group_by(m.value))).all()
        d = METRICS_DEPTHS.c
        if dimension == "campaign":  # a campaign's depth by domain: the domains' rows by campaign, read the other way
            pairs = select(d.value, d.messages).where(
                d.dimension == "domain", d.breakdown == "campaign", d.item == value, d.messages != 0
            )
        else:
            pairs = select(d.item, d.messages).where(
                d.dimension == dimension, d.value == value, d.breakdown == breakdown, d.messages != 0
            )
        return (await session.execute(pairs)).all()

    return totals, await depths("domain"), await depths("campaign")


def _totals(counters: Any, where: Sequence[ColumnElement[bool]]) -> Any:
    """Messages and their sums by status and bounce class over the rows ``where`` selects, from a table of counters
    with ``message_counts``' sums (``message_counts``, ``metrics_counts``), in the order ``metrics`` reads them."""
    return (
        select(
            counters.status,
            counters.bounce_classification,
            *(func.sum(counters[name]) for name in COUNTED_SUMS),
        )
        .where(*where)
        .group_by(counters.status, counters.bounce_classification)
    )


async def _counted_by_queue(
    session: AsyncSession, tenant_id: str | None, campaign_id: str | None, domain: str | None
) -> CountedRows:
    """``_counted`` from the counters keyed by queue."""
    n = COUNTS.c
    scope = _scope(n, tenant_id, campaign_id, domain)
    # Three aggregations in the database, each returning few rows (statuses, domains, campaigns), rather than every
    # (domain, campaign, status, class) group: at 2M messages in 250,000 queues that was ~300k rows summed again
    # in Python.
    totals = (await session.execute(_totals(n, [*scope, n.messages != 0]))).all()
    queued = n.status.in_(IN_QUEUE)
    domains = (
        await session.execute(
            select(n.domain, func.coalesce(func.sum(n.messages).filter(queued), 0))
            .where(*scope, n.messages != 0)
            .group_by(n.domain)
        )
    ).all()
    campaigns = (
        await session.execute(
            select(n.campaign_id, func.sum(n.messages))
            .where(*scope, n.messages != 0, queued, n.campaign_id != "")
            .group_by(n.campaign_id)
        )
    ).all()
    return totals, domains, campaigns


def _top(counts: dict[str, int]) -> dict[str, int]:
    ranked = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:TOP_BREAKDOWN])


def _scope(
    columns: Any, tenant_id: str | None, campaign_id: str | None, domain: str | None, *, mirror: bool = False
) -> list[ColumnElement[bool]]:
    """The metrics' filters on a table with tenant_id, campaign_id and domain columns (the mirror, its counters).
    ``campaign_id`` '' asks for the messages without a campaign: '' in the counters, NULL in the mirror."""
    where: list[ColumnElement[bool]] = []
    if tenant_id is not None:
        where.append(columns.tenant_id == tenant_id)
    if campaign_id == "" and mirror:
        where.append(or_(columns.campaign_id.is_(None), columns.campaign_id == ""))
    elif campaign_id is not None:
        where.append(columns.campaign_id == campaign_id)
    if domain is not None:
        where.append(columns.domain == domain.lower())
    return where


async def _queued_age_bounds(
    session: AsyncSession, tenant_id: str | None, campaign_id: str | None, domain: str | None
) -> tuple[datetime | None, datetime | None]:
    """The oldest and newest creation times of queued messages, from the partial index of queued messages
    (``ix_message_queue_queued``): two index ends, or a walk from them to the first match when scoped."""
    c = COLUMNS
    where = [c.status.in_(IN_QUEUE), *_scope(c, tenant_id, campaign_id, domain, mirror=True)]
    oldest = await session.scalar(select(c.created_at).where(*where).order_by(c.created_at.asc()).limit(1))
    newest = await session.scalar(select(c.created_at).where(*where).order_by(c.created_at.desc()).limit(1))
    return oldest, newest


async def _windows(
    session: AsyncSession,
    now: datetime,
    *,
    tenant_id: str | None,
    campaign_id: str | None,
    domain: str | None,
) -> tuple[int, int, int, int]:
    """Messages received in the last hour, 24 hours and 7 days, and delivered in the last hour: the events every
    source logs for those (KumoMTA's Reception and Delivery, ZoneMTA's QUEUED and ACCEPTED: ``RECEIVED_TYPES``,
    ``DELIVERED_TYPES``) in the per-minute rollups (one dimension at a time). With two or more of tenant, campaign
    and domain the rollups cannot answer, and the mirror is counted over the narrowest index instead."""
    given = {
        name: value
        for name, value in (("tenant", tenant_id), ("campaign", campaign_id), ("domain", domain))
        if value is not None
    }
    # Events without a campaign have no rollup rows: the messages without one (campaign_id '') are counted in the
    # mirror, as a combination of filters is.
    if len(given) > 1 or campaign_id == "":
        return await _windows_from_mirror(session, now, tenant_id=tenant_id, campaign_id=campaign_id, domain=domain)
    dimension, value = next(iter(given.items())) if given else ("all", "")
    if dimension == "domain":
        value = value.lower()
    r = ROLLUPS.c
    current = minute_of(now)  # a window is the current minute and the whole minutes before it

    def since(delta: timedelta, metrics: tuple[str, ...]) -> Any:
        return (
            select(func.coalesce(func.sum(r.events), 0))
            .where(
                r.dimension == dimension,
                r.value == value,
                r.metric.in_(metrics),
                r.minute > current - delta,
                r.minute <= current,
            )
            .scalar_subquery()
        )

    row = (
        await session.execute(
            select(
                since(timedelta(hours=1), RECEIVED_TYPES),
                since(timedelta(hours=24), RECEIVED_TYPES),
                since(timedelta(days=7), RECEIVED_TYPES),
                since(timedelta(hours=1), DELIVERED_TYPES),
            )
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def _windows_from_mirror(
    session: AsyncSession, now: datetime, *, tenant_id: str | None, campaign_id: str | None, domain: str | None
) -> tuple[int, int, int, int]:
    c = COLUMNS
    scope = _scope(c, tenant_id, campaign_id, domain, mirror=True)
    row = (
        await session.execute(
            select(
                func.count().filter(c.created_at >= now - timedelta(hours=1)),
                func.count().filter(c.created_at >= now - timedelta(hours=24)),
                func.count(),
                func.count().filter(
                    and_(c.status == MessageQueueStatus.delivered.value, c.delivered_at >= now - timedelta(hours=1))
                ),
            ).where(*scope, c.created_at >= now - timedelta(days=7))
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


async def _domain_health(
    session: AsyncSession, tenant_id: str | None, campaign_id: str | None, domain: str | None
) -> dict[str, DomainHealthScore]:
    """The busiest domains' scores as the ``score_domains`` job last wrote them (controlplane.domains): fleet-wide,
    or a tenant's own mail to each domain. The rollups score no campaign by domain: a campaign's metrics have none."""
    if campaign_id is not None:
        return {}
    c = DomainScoreRow
    statement = select(c).where(c.tenant == (tenant_id or ""))
    if domain is not None:
        statement = statement.where(c.domain == domain.lower())
    rows = (await session.scalars(statement.order_by(c.attempts.desc(), c.domain).limit(TOP_BREAKDOWN))).all()
    return {
        r.domain: DomainHealthScore(
            domain=r.domain,
            score=r.score,
            bounce_rate=_percent(r.bounced, r.attempts),
            average_delivery_time=r.average_delivery_time,
            last_successful_delivery=r.last_successful_delivery,
        )
        for r in rows
    }
