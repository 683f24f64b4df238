"""Wire types of the operations API: a ``QueueOperation`` (seed 000 §2.3) plus targeting."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from adapters.model import QueueOperationResult, QueueOperationType
from controlplane.queues.schema import PlannedMessage

# humantime durations as kumod reads them: "90s", "2h", "1h 30m", "7days". Checked in words by
# operations.duration.check_duration where requests come in (the API and the CLI), not here: stored operations are
# read back through this type, and those accepted before must still load.
Duration = Annotated[str, Meta(max_length=50)]


Part = Annotated[str, Meta(min_length=1, max_length=255)]


class OperationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An operation and its target. A queue is targeted when it satisfies every targeting field given; at least
    one is required, and ``everything: true`` (alone) is the only way to target every queue."""

    operation: QueueOperationType
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    queue_name: Part | None = None
    # Instead of a queue target, these messages (mirrored ids, or an MTA's message id): on MTAs that take them.
    message_ids: Annotated[list[Annotated[str, Meta(min_length=1, max_length=998)]], Meta(max_length=10_000)] | None = (
        None
    )
    metadata: dict[str, Any] | None = None
    # Targeting: which queues and on which nodes.
    domain: Part | None = None
    tenant: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    campaign: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    routing_domain: Part | None = None
    everything: bool = False
    nodes: list[str] | None = None  # ids, names or label selectors "key=value"; default: every node
    duration: Duration | None = None
    dry_run: bool = False


class NodeOutcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    node: str
    node_id: uuid.UUID
    result: QueueOperationResult
    reference: str | None = None  # the MTA's id for what was created (suspension, bounce), needed to undo it
    note: str | None = None  # what a reader should know about this node's outcome (e.g. nothing was sent)
    # The exact queue names sent, where the target was expressed as names (a field the MTA's request lacks)
    queue_names: list[str] | None = None
    # A dry run on a node that lists its queue (ZoneMTA): the mirrored messages it would act on, as it last listed
    # them (at most 100 shown; ``result.affected_messages`` counts them all).
    messages: list[PlannedMessage] | None = None


class OperationProgress(msgspec.Struct, kw_only=True):
    nodes_total: int
    nodes_done: int


class OperationRecord(msgspec.Struct, kw_only=True):
    """An operation and what came of it. ``status``: ``planned`` (dry run), ``running``, then ``done`` (every node
    succeeded), ``partial``, ``failed``, or ``interrupted`` (the process running it stopped first)."""

    id: uuid.UUID
    created_at: datetime
    finished_at: datetime | None
    actor: str
    status: str
    dry_run: bool
    request: OperationRequest
    total: QueueOperationResult | None  # while running: what the mirror says the operation affects
    nodes: list[NodeOutcome]  # per node, as each finishes
    progress: OperationProgress
