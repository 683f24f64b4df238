"""An in-memory MTA for tests of everything above the adapters: it keeps suspensions, bounces and queue counts
in dicts and applies operations to them, with the same errors a real node raises."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from adapters.base import (
    MtaAdapter,
    MtaRefused,
    MtaUnreachable,
    NodeHealth,
    QueueCounts,
    StandingBounce,
    Suspension,
    Target,
    queue_matches,
)

ALL_TARGET_FIELDS = frozenset({"domain", "tenant", "campaign", "routing_domain", "queue_names", "everything"})


class FakeMta(MtaAdapter):
    kind = "fake"
    # The fake applies ``queue_matches`` itself, so every field means what it says.
    target_fields = {family: ALL_TARGET_FIELDS for family in ("suspend", "bounce", "rebind")}

    def __init__(self, scheduled: dict[str, int] | None = None, *, reachable: bool = True) -> None:
        self.scheduled = dict(scheduled or {})
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
