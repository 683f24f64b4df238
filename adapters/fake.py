"""An in-memory MTA for tests of everything above the adapters: it keeps suspensions, bounces and queue counts
in dicts and applies operations to them, with the same errors a real node raises."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from adapters.base import (
    Capabilities,
    MessageRef,
    MtaAdapter,
    MtaRefused,
    MtaUnreachable,
    NodeHealth,
    OperationCall,
    OperationDone,
    OperationSupport,
    QueueCounts,
    StandingBounce,
    Suspension,
    Target,
    queue_matches,
)
from adapters.driver import NodeConfig
from adapters.model import QueueOperationType as Op
from adapters.model.events import EventSource

ALL_TARGET_FIELDS = frozenset({"domain", "tenant", "campaign", "routing_domain", "queue_names", "everything"})
# The fake applies ``queue_matches`` itself, so every field means what it says; it takes every operation by
# queue, and cancel, purge and retry per message too.
FAKE_CAPABILITIES = Capabilities(
    operations={
        op: OperationSupport(
            target_fields=None if op is Op.resume else ALL_TARGET_FIELDS,
            per_message=op in (Op.cancel, Op.purge, Op.retry),
        )
        for op in Op
    },
    refused={},
)


class FakeMta(MtaAdapter):
    kind = "fake"

    def __init__(
        self,
        scheduled: dict[str, int] | None = None,
        *,
        reachable: bool = True,
        messages: dict[MessageRef, str] | None = None,
    ) -> None:
        self.scheduled = dict(scheduled or {})
        self.messages = dict(messages or {})  # message -> the queue it is in
        self.ready: dict[str, int] = {}
        self.suspensions: dict[str, Suspension] = {}
        self.bounces: dict[str, StandingBounce] = {}
        self.reachable = reachable
        self.calls: list[tuple[str, Any]] = []

    def _check(self, call: str, argument: Any = None) -> None:
        if not self.reachable:
            raise MtaUnreachable("fake node unreachable", node="fake")
        self.calls.append((call, argument))

    def matching(self, target: Target) -> list[str]:
        """The scheduled queues a target selects, by kumod's rules."""
        return [name for name in self.scheduled if queue_matches(target, name)]

    async def health(self) -> NodeHealth:
        return NodeHealth(reachable=self.reachable, version="fake", checked_at=datetime.now(UTC))

    async def queue_counts(self) -> QueueCounts:
        self._check("queue_counts")
        return QueueCounts(scheduled=dict(self.scheduled), ready=dict(self.ready))

    async def inspect_message(self, message_id: str) -> dict[str, Any]:
        self._check("inspect_message", message_id)
        raise MtaRefused(f"no message {message_id}", status=404, node="fake")

    async def suspend(self, target: Target, *, reason: str, duration: str | None = None) -> str:
        self._check("suspend", target)
        ident = str(uuid.uuid4())
        self.suspensions[ident] = Suspension(
            id=ident,
            reason=reason,
            domain=target.domain,
            tenant=target.tenant,
            campaign=target.campaign,
            remaining=duration,
        )
        return ident

    async def resume(self, suspension_id: str) -> None:
        self._check("resume", suspension_id)
        self.suspensions.pop(suspension_id, None)

    async def list_suspensions(self) -> list[Suspension]:
        self._check("list_suspensions")
        return list(self.suspensions.values())

    async def bounce(
        self,
        target: Target,
        *,
        reason: str,
        duration: str | None = None,
        suppress_logging: bool = False,
        cancel: bool = False,
    ) -> str:
        self._check("bounce", target)
        ident = str(uuid.uuid4())
        bounced = 0
        for queue in self.matching(target):
            bounced += self.scheduled[queue]
            self.scheduled[queue] = 0
        self.bounces[ident] = StandingBounce(
            id=ident,
            reason=reason,
            domain=target.domain,
            tenant=target.tenant,
            campaign=target.campaign,
            remaining=duration,
            total_bounced=bounced,
        )
        return ident

    async def cancel_bounce(self, bounce_id: str) -> None:
        self._check("cancel_bounce", bounce_id)
        self.bounces.pop(bounce_id, None)

    async def list_bounces(self) -> list[StandingBounce]:
        self._check("list_bounces")
        return list(self.bounces.values())

    async def retry(self, target: Target, *, reason: str) -> None:
        self._check("retry", target)

    async def rebind(self, target: Target, *, reason: str, data: dict[str, str]) -> None:
        self._check("rebind", (target, data))

    async def set_priority(self, target: Target, *, priority: int) -> None:
        self._check("set_priority", (target, priority))

    async def perform(self, call: OperationCall) -> OperationDone:
        op, target = call.operation, call.target
        FAKE_CAPABILITIES.support(op, per_message=call.messages is not None)
        if call.messages is not None:
            self._check(op.value, call.messages)
            found = [m for m in call.messages if m in self.messages]
            if op is not Op.retry:
                for message in found:
                    self.scheduled[self.messages.pop(message)] -= 1
            return OperationDone(affected=len(found))
        if op is Op.suspend:
            return OperationDone(reference=await self.suspend(target, reason=call.reason, duration=call.duration))
        if op is Op.resume:
            wanted = (target.domain, target.tenant, target.campaign)
            lifted = [
                s.id
                for s in await self.list_suspensions()
                if (s.id == call.suspension_id if call.suspension_id else (s.domain, s.tenant, s.campaign) == wanted)
            ]
            for ident in lifted:
                await self.resume(ident)
            return OperationDone(reference=",".join(lifted) or None)
        if op in (Op.bounce, Op.cancel, Op.purge):
            return OperationDone(reference=await self.bounce(target, reason=call.reason, duration=call.duration))
        if op is Op.retry:
            await self.retry(target, reason=call.reason)
        elif op is Op.rebind:
            await self.rebind(target, reason=call.reason, data=dict(call.data or {}))
        elif op is Op.set_priority:
            await self.set_priority(target, priority=int((call.data or {}).get("priority", "0")))
        return OperationDone()


class FakeDriver:
    """In-memory nodes by name: what one use of a node changed, the next sees (as with a real node)."""

    kind = "fake"
    title = "in-memory fake"

    def __init__(self) -> None:
        self.nodes: dict[str, FakeMta] = {}

    def capabilities(self) -> Capabilities:
        return FAKE_CAPABILITIES

    def connect(self, node: NodeConfig, *, http: httpx.AsyncClient | None = None) -> MtaAdapter:
        return self.nodes.setdefault(node.name, FakeMta())

    @property
    def events(self) -> EventSource | None:
        return None


DRIVER = FakeDriver()
