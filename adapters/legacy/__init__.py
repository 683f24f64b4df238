"""The legacy customer-service ``QueueItem`` model and its adapter to and from ``MessageQueueItem`` (seed 000 §3-4)."""

from adapters.legacy.queue_item import (
    LEGACY_TO_STATUS,
    STATUS_TO_LEGACY,
    LegacyQueueMetrics,
    LegacyStatus,
    QueueItem,
    adapt_legacy_to_message,
    adapt_message_to_legacy,
    adapt_metrics_to_legacy,
    legacy_message_uuid,
)

__all__ = [
    "LEGACY_TO_STATUS",
    "STATUS_TO_LEGACY",
    "LegacyQueueMetrics",
    "LegacyStatus",
    "QueueItem",
    "adapt_legacy_to_message",
    "adapt_message_to_legacy",
    "adapt_metrics_to_legacy",
    "legacy_message_uuid",
]
