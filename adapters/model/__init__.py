"""The one queue model every adapter maps onto (seed 000, sections 1-2).

Field names, enum values and struct names are exactly those of the design document; the wire format is JSON
with ISO-8601 timestamps. Optional fields are omitted when unset, as in the document's TypeScript interfaces.
"""

from adapters.model.lifecycle import (
    TERMINAL_STATUSES,
    StatusTransitionError,
    can_transition,
    check_transition,
)
from adapters.model.queue import (
    EMAIL_PATTERN,
    BounceType,
    DomainHealthScore,
    MessageQueueItem,
    MessageQueueStatus,
    QueueFilter,
    QueueMetrics,
    QueueOperation,
    QueueOperationResult,
    QueueOperationType,
    QueueSortField,
    QueueState,
    SmtpResponse,
    SortOrder,
    assume_utc,
    header,
    normalize_address,
    recipient_domain,
    validated,
)
from adapters.model.queue_name import QueueName

__all__ = [
    "EMAIL_PATTERN",
    "TERMINAL_STATUSES",
    "BounceType",
    "DomainHealthScore",
    "MessageQueueItem",
    "MessageQueueStatus",
    "QueueFilter",
    "QueueMetrics",
    "QueueName",
    "QueueOperation",
    "QueueOperationResult",
    "QueueOperationType",
    "QueueSortField",
    "QueueState",
    "SmtpResponse",
    "SortOrder",
    "StatusTransitionError",
    "assume_utc",
    "can_transition",
    "check_transition",
    "header",
    "normalize_address",
    "recipient_domain",
    "validated",
]
