"""The one interface every MTA adapter implements, and the adapter exception tree.

    MtaError                      (base)
    ├── MtaUnreachable            the node did not answer (connect error, timeout) after bounded retries
    ├── MtaAuthRefused            the node refused our credentials (401/403)
    ├── MtaRefused                the node answered but said no (other 4xx, or 5xx after retries); keeps its reason
    ├── MtaBadAnswer              the node answered 2xx with something that is not what its API defines
    └── UnsupportedOperation      the MTA has no such operation (e.g. set_priority on KumoMTA); nothing was sent

``controlplane.errors`` maps these to HTTP in its one handler. Adapters are picked by a node's kind
(``adapter_for``), as saq picks a queue backend by URL scheme.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Any

import msgspec
import sniffio

from adapters.model import QueueName


class MtaError(Exception):
    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


class MtaUnreachable(MtaError):
    pass


class MtaAuthRefused(MtaError):
    pass


class MtaRefused(MtaError):
    def __init__(self, message: str, *, status: int, node: str | None = None) -> None:
        super().__init__(message, node=node)
        self.status = status


class MtaBadAnswer(MtaError):
    pass


class UnsupportedOperation(MtaError):
    pass


class Target(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Which scheduled queues an operation applies to. ``queue_names`` takes precedence over the other fields;
    at least one field must be set (an empty target would mean every queue)."""

    domain: str | None = None
    tenant: str | None = None
    campaign: str | None = None
    routing_domain: str | None = None
    queue_names: list[str] | None = None

    def is_empty(self) -> bool:
        return not (self.domain or self.tenant or self.campaign or self.routing_domain or self.queue_names)


def queue_matches(target: Target, queue_name: str) -> bool:
    """Whether ``target`` selects the scheduled queue ``queue_name``, by kumod's rules."""
    if target.queue_names:
        return queue_name in target.queue_names
    parts = QueueName.parse(queue_name)
    wanted = (
        (target.domain, parts.domain),
        (target.tenant, parts.tenant),
        (target.campaign, parts.campaign),
        (target.routing_domain, parts.routing_domain),
    )
    return not target.is_empty() and all(want is None or want == have for want, have in wanted)


class Suspension(msgspec.Struct, kw_only=True):
    id: str
    reason: str
    domain: str | None = None
    tenant: str | None = None
    campaign: str | None = None
    ready_queue: str | None = None  # set for a suspension of an egress path (ready queue)
    remaining: str | None = None  # as the MTA reports it (a humantime duration for kumod)
    # Who made it: "kumod" (its admin API; liftable) or "tsa" (a shaping rule; ends when it expires)
    source: str = "kumod"


class StandingBounce(msgspec.Struct, kw_only=True):
    id: str
    reason: str
    domain: str | None = None
    tenant: str | None = None
    campaign: str | None = None
    remaining: str | None = None
    total_bounced: int = 0


class QueueCounts(msgspec.Struct, kw_only=True):
    """Messages per scheduled queue and per ready queue (egress path), as the node reports them."""

    scheduled: dict[str, int]
    ready: dict[str, int]


class NodeHealth(msgspec.Struct, kw_only=True):
    reachable: bool
    version: str | None = None
    checked_at: datetime
    detail: str | None = None


class MtaAdapter(abc.ABC):
    """One MTA node. Every method talks to that node only; errors are ``MtaError`` subclasses."""

    kind: str

    @abc.abstractmethod
    async def health(self) -> NodeHealth: ...

    @abc.abstractmethod
    async def queue_counts(self) -> QueueCounts: ...

    @abc.abstractmethod
    async def inspect_message(self, message_id: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def suspend(self, target: Target, *, reason: str, duration: str | None = None) -> str:
        """Suspend delivery for the target; returns the suspension's id (needed to resume)."""

    @abc.abstractmethod
    async def resume(self, suspension_id: str) -> None: ...

    @abc.abstractmethod
    async def list_suspensions(self) -> list[Suspension]: ...

    @abc.abstractmethod
    async def bounce(
        self, target: Target, *, reason: str, duration: str | None = None, suppress_logging: bool = False
    ) -> str:
        """Fail the target's queued messages (and, while the bounce stands, new ones); returns its id."""

    @abc.abstractmethod
    async def cancel_bounce(self, bounce_id: str) -> None: ...

    @abc.abstractmethod
    async def list_bounces(self) -> list[StandingBounce]: ...

    @abc.abstractmethod
    async def retry(self, target: Target, *, reason: str) -> None:
        """Make the target's messages due now."""

    @abc.abstractmethod
    async def rebind(self, target: Target, *, reason: str, data: dict[str, str]) -> None:
        """Move the target's messages to other queues by rewriting their metadata."""

    async def set_priority(self, target: Target, *, priority: int) -> None:
        raise UnsupportedOperation(f"{self.kind} has no message priority to set")

    async def close(self) -> None:
        return None


def declare_asyncio() -> None:
    """Tell sniffio that the current context runs on asyncio. httpcore and anyio ask it on every read, write and
    lock; declared, it answers from a context variable instead of inspecting the running task: about a fifth of
    the CPU of a fan-out to 100 nodes (bench/fanout.py). Tasks started afterwards inherit the declaration."""
    sniffio.current_async_library_cvar.set("asyncio")


# The node kinds with an adapter. ZoneMTA nodes can be registered ahead of their adapter, not operated on.
ADAPTER_KINDS = frozenset({"kumomta", "fake"})


def adapter_for(kind: str, base_url: str, **options: Any) -> MtaAdapter:
    """The adapter for a node's kind ("kumomta"; "fake" for tests). ZoneMTA is not implemented yet."""
    if kind == "kumomta":
        from adapters.kumomta.client import KumoMtaClient

        return KumoMtaClient(base_url, **options)
    if kind == "fake":
        from adapters.fake import FakeMta

        return FakeMta(**options)
    raise UnsupportedOperation(f"no adapter for MTA kind {kind!r}")
