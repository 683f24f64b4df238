"""Response types of the queue API."""

from __future__ import annotations

import uuid

import msgspec

from adapters.legacy import QueueItem
from adapters.model import MessageQueueItem, MessageQueueStatus, QueueState


class MessagePage(msgspec.Struct, kw_only=True):
    """One page of messages. Pass ``cursor`` back to get the next page; it is null on the last one."""

    data: list[MessageQueueItem]
    cursor: str | None
    has_more: bool


class LegacyQueueItemPage(msgspec.Struct, kw_only=True):
    data: list[QueueItem]
    cursor: str | None
    has_more: bool


class NodeQueueCount(msgspec.Struct, kw_only=True):
    node: str
    node_id: uuid.UUID
    scheduled: int


class QueueSummary(msgspec.Struct, kw_only=True):
    """One scheduled queue (by ``queue_name``): its mirrored messages by status, and what each node holds in it.

    ``queue_state`` is ``suspended`` while a suspension on any node matches the queue (ids in ``suspended_by``).
    """

    queue_name: str
    domain: str
    tenant_id: str | None
    campaign_id: str | None
    queue_state: QueueState
    total: int
    messages_by_status: dict[MessageQueueStatus, int]
    scheduled: int = 0  # messages the nodes report in this queue, summed (per node in ``nodes``)
    nodes: list[NodeQueueCount] = msgspec.field(default_factory=list)
    suspended_by: list[str] = msgspec.field(default_factory=list)
    bounced_by: list[str] = msgspec.field(default_factory=list)  # standing bounces failing this queue's messages


class ReadyQueueSummary(msgspec.Struct, kw_only=True):
    """A ready queue (egress path) on one node: messages due now, waiting for a connection."""

    name: str
    node: str
    node_id: uuid.UUID
    ready: int
    queue_state: QueueState
    suspended_by: list[str] = msgspec.field(default_factory=list)


# GET /api/v1/queues: queues on a page by default, and at most.
QUEUE_PAGE_DEFAULT = 100
QUEUE_PAGE_MAX = 1000


class QueueList(msgspec.Struct, kw_only=True):
    """One page of queues, by queue name. Pass ``cursor`` back to get the next page; it is null on the last one.

    ``ready_queues`` (every node's egress paths, a few per node) come with the first page only, empty on later
    ones, and never for a tenant-bound key: a client walking every page gets each once."""

    data: list[QueueSummary]
    ready_queues: list[ReadyQueueSummary] = msgspec.field(default_factory=list)
    cursor: str | None
    has_more: bool


class PlannedMessage(msgspec.Struct, kw_only=True):
    """A mirrored message an operation would act on (a dry run's listing)."""

    id: uuid.UUID
    recipient: str
    status: str
