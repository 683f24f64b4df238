"""Response types of the queue API."""

from __future__ import annotations

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


class QueueSummary(msgspec.Struct, kw_only=True):
    """One queue (by ``queue_name``) with the number of its messages in each status."""

    queue_name: str
    domain: str
    tenant_id: str | None
    campaign_id: str | None
    queue_state: QueueState
    total: int
    messages_by_status: dict[MessageQueueStatus, int]


class QueueList(msgspec.Struct, kw_only=True):
    data: list[QueueSummary]
