"""KumoMTA adapter over kumod's real admin HTTP API (shapes in fixtures/kumomta, defined in kumo-api-types).

kumod has no queue listing: queue counts come from ``GET /metrics`` (Prometheus text). Suspensions of scheduled
queues and of ready queues (egress paths) are separate resources; "resume" deletes a suspension by id. Bounce
requests are decoded by kumod with ``deny_unknown_fields``, so only its known fields are ever sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import (
    Capabilities,
    MtaAdapter,
    MtaBadAnswer,
    MtaError,
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
    TargetNotExpressible,
    UnsupportedOperation,
    queue_matches,
)
from adapters.http import DEFAULT_TIMEOUT_SECONDS, NodeAuth, NodeHttp
from adapters.kumomta.mapping import CANCEL_MARK
from adapters.model import QueueOperationType as Op

T = TypeVar("T")


class _SuspendEntry(msgspec.Struct):
    id: str
    reason: str
    duration: str | None = None
    campaign: str | None = None
    tenant: str | None = None
    domain: str | None = None


class _ReadySuspendEntry(msgspec.Struct):
    id: str
    name: str
    reason: str
    duration: str | None = None


class _BounceEntry(msgspec.Struct):
    id: str
    reason: str
    duration: str | None = None
    campaign: str | None = None
    tenant: str | None = None
    domain: str | None = None
    routing_domain: str | None = None
    total_bounced: int = 0


class _TsaScheduledEntry(msgspec.Struct):
    rule_hash: str
    reason: str
    expires: str
    tenant: str | None = None
    domain: str | None = None
    campaign: str | None = None


class _TsaReadyEntry(msgspec.Struct):
    rule_hash: str
    site_name: str
    source: str
    reason: str
    expires: str


class _TsaSuspended(msgspec.Struct):
    sched_q: list[_TsaScheduledEntry] = msgspec.field(default_factory=list)
    ready_q: list[_TsaReadyEntry] = msgspec.field(default_factory=list)


class _IdResponse(msgspec.Struct):
    id: str


# What each kumod request can select, read from kumo-api-types (fixtures/kumomta/README.md): SuspendV1Request has
# campaign, tenant, domain and queue_names but no routing_domain (an unknown field is ignored, and a request naming
# nothing suspends every queue); BounceV1Request has all five (deny_unknown_fields); RebindV1Request has the four
# criteria and no queue_names. "everything" is the request with no criterion at all.
KUMOD_TARGET_FIELDS: dict[str, frozenset[str]] = {
    "suspend": frozenset({"domain", "tenant", "campaign", "queue_names", "everything"}),
    "bounce": frozenset({"domain", "tenant", "campaign", "routing_domain", "queue_names", "everything"}),
    "rebind": frozenset({"domain", "tenant", "campaign", "routing_domain", "everything"}),
}
_QUEUES_ONLY = "KumoMTA has no per-message operations; target queues instead"
KUMOMTA_CAPABILITIES = Capabilities(
    operations={
        Op.suspend: OperationSupport(target_fields=KUMOD_TARGET_FIELDS["suspend"]),
        # A resume lifts suspensions that lie inside the target (``lifts``): matched here, not expressed.
        Op.resume: OperationSupport(target_fields=None),
        Op.bounce: OperationSupport(target_fields=KUMOD_TARGET_FIELDS["bounce"]),
        Op.cancel: OperationSupport(target_fields=KUMOD_TARGET_FIELDS["bounce"], note="an admin bounce, marked"),
        Op.purge: OperationSupport(target_fields=KUMOD_TARGET_FIELDS["bounce"], note="an unlogged admin bounce"),
        Op.retry: OperationSupport(target_fields=KUMOD_TARGET_FIELDS["rebind"], note="a flushing rebind"),
        Op.rebind: OperationSupport(target_fields=KUMOD_TARGET_FIELDS["rebind"]),
    },
    refused={Op.set_priority: "set_priority: KumoMTA has no message priority"},
    per_message_refusal=_QUEUES_ONLY,
    holds_egress=True,
)


# A purge sends no records (suppress_logging): were its bounce left standing for kumod's default 5 minutes, new
# messages to the target would vanish unrecorded. It removes what is queued now, unless told longer.
PURGE_DURATION = "1s"


def lifts(suspension: Suspension, target: Target, wanted: str | None, recorded: tuple[str, ...] | None) -> bool:
    """Whether a resume lifts this suspension: the one named by id, else a suspension made through kumod's admin
    API that covers nothing outside the target: the same criteria (kumod's rule), or, for one mtactl made by
    queue names, names the target all selects."""
    if wanted is not None:
        return suspension.id == wanted
    if suspension.source != "kumod" or suspension.ready_queue is not None:
        return False  # the TSA daemon's end on their own; ready-queue suspensions are lifted by id
    if recorded:
        return all(queue_matches(target, name) for name in recorded)
    if target.routing_domain or target.queue_names:
        return False
    return (suspension.domain, suspension.tenant, suspension.campaign) == (
        target.domain,
        target.tenant,
        target.campaign,
    )


class KumoMtaClient(MtaAdapter):
    kind = "kumomta"

    def __init__(
        self,
        base_url: str,
        *,
        auth: NodeAuth | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        node: str | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        tsa_url: str | None = None,
    ) -> None:
        """``http``: the process's shared client (``adapters.http.pooled_client``), left open by ``close``; without
        it the adapter makes and owns a client of its own."""
        self._api = NodeHttp(base_url, node=node, auth=auth, timeout=timeout, http=http, transport=transport)
        self.node = self._api.node
        self._tsa = tsa_url.rstrip("/") if tsa_url else None
        self._http = self._api.http
        self._timeout = timeout

    async def close(self) -> None:
        await self._api.close()

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        return await self._api.request(method, path, json=json, params=params)

    def _decode(self, response: httpx.Response, kind: type[T]) -> T:
        return self._api.decode(response, kind)

    async def health(self) -> NodeHealth:
        now = datetime.now(UTC)
        try:
            await self._request("GET", "/api/check-liveness/v1")
        except MtaError as exc:
            return NodeHealth(reachable=False, checked_at=now, detail=exc.message)
        return NodeHealth(reachable=True, checked_at=now)

    async def queue_counts(self) -> QueueCounts:
        text = (await self._request("GET", "/metrics")).text
        scheduled: dict[str, int] = {}
        ready: dict[str, int] = {}
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "scheduled_count" and "queue" in sample.labels:
                        scheduled[sample.labels["queue"]] = int(sample.value)
                    elif sample.name == "ready_count" and "service" in sample.labels:
                        # kumod labels a ready queue "<protocol>:<ready queue name>" (smtp_client, lua, …; no
                        # colon in the protocol); the name alone is what ready-queue suspensions use.
                        _, _, name = sample.labels["service"].partition(":")
                        ready[name or sample.labels["service"]] = int(sample.value)
        except (ValueError, TypeError) as exc:
            raise MtaBadAnswer(f"{self.node}: /metrics is not Prometheus text ({exc})", node=self.node) from None
        return QueueCounts(scheduled=scheduled, ready=ready)

    async def inspect_message(self, message_id: str) -> dict[str, Any]:
        response = await self._request(
            "GET", "/api/admin/inspect-message/v1", params={"id": message_id, "want_body": "false"}
        )
        return self._decode(response, dict[str, Any])

    async def suspend(self, target: Target, *, reason: str, duration: str | None = None) -> str:
        body = _target_body(target, "suspend") | {"reason": reason, **({"duration": duration} if duration else {})}
        response = await self._request("POST", "/api/admin/suspend/v1", json=body)
        return self._decode(response, _IdResponse).id

    async def suspend_ready_queue(self, name: str, *, reason: str, duration: str | None = None) -> str:
        body = {"name": name, "reason": reason, **({"duration": duration} if duration else {})}
        response = await self._request("POST", "/api/admin/suspend-ready-q/v1", json=body)
        return self._decode(response, _IdResponse).id

    def egress_paths(self, source: str, ready_queues: Iterable[str]) -> list[str]:
        # kumod names a ready queue "<egress source>-><site>@<protocol>" (ready_queue.rs): a source's paths are
        # those named from it.
        return sorted(q for q in ready_queues if q.startswith(f"{source}->"))

    async def hold_egress_path(self, path: str, *, reason: str, duration: str | None = None) -> str:
        return await self.suspend_ready_queue(path, reason=reason, duration=duration)

    async def resume(self, suspension_id: str) -> None:
        if suspension_id.startswith("tsa:"):
            raise UnsupportedOperation("a TSA suspension ends when it expires; kumod cannot lift it")
        # The id may belong to a scheduled-queue or a ready-queue suspension; ask kumod which.
        ready_ids = {s.id for s in await self._ready_suspensions()}
        path = "/api/admin/suspend-ready-q/v1" if suspension_id in ready_ids else "/api/admin/suspend/v1"
        await self._request("DELETE", path, json={"id": suspension_id})

    async def _ready_suspensions(self) -> list[_ReadySuspendEntry]:
        response = await self._request("GET", "/api/admin/suspend-ready-q/v1")
        return self._decode(response, list[_ReadySuspendEntry])

    async def list_suspensions(self) -> list[Suspension]:
        response = await self._request("GET", "/api/admin/suspend/v1")
        scheduled = self._decode(response, list[_SuspendEntry])
        found = [
            Suspension(
                id=s.id, reason=s.reason, domain=s.domain, tenant=s.tenant, campaign=s.campaign, remaining=s.duration
            )
            for s in scheduled
        ]
        found += [
            Suspension(id=s.id, reason=s.reason, ready_queue=s.name, remaining=s.duration)
            for s in await self._ready_suspensions()
        ]
        if self._tsa:
            found += await self._tsa_suspensions(self._tsa)
        return found

    async def _tsa_suspensions(self, tsa: str) -> list[Suspension]:
        """The TSA daemon's automatic suspensions, which kumod's own listing leaves out. They are not ids kumod
        knows: they end when they expire (or when the rule that made them is removed)."""
        try:
            # Not with the node's credentials: they are kumod's, and the daemon is another service.
            response = await self._http.get(f"{tsa}/get_suspension_v1/suspended.json", auth=None, timeout=self._timeout)
        except httpx.TransportError as exc:
            raise MtaUnreachable(f"{self.node}: TSA daemon unreachable: {exc}", node=self.node) from None
        if response.status_code >= 400:
            raise MtaRefused(
                f"{self.node}: TSA daemon said {response.status_code}", status=response.status_code, node=self.node
            )
        listed = self._decode(response, _TsaSuspended)
        found = [
            Suspension(
                id=f"tsa:{s.rule_hash}:{s.campaign or ''}:{s.tenant or ''}@{s.domain or ''}",
                reason=s.reason,
                domain=s.domain,
                tenant=s.tenant,
                campaign=s.campaign,
                remaining=f"until {s.expires}",
                source="tsa",
            )
            for s in listed.sched_q
        ]
        found += [
            Suspension(
                id=f"tsa:{s.rule_hash}:{s.source}->{s.site_name}",
                reason=s.reason,
                # kumod names an SMTP ready queue "<source>-><site>@smtp_client"; TSA shapes SMTP delivery.
                ready_queue=f"{s.source}->{s.site_name}@smtp_client",
                remaining=f"until {s.expires}",
                source="tsa",
            )
            for s in listed.ready_q
        ]
        return found

    async def bounce(
        self,
        target: Target,
        *,
        reason: str,
        duration: str | None = None,
        suppress_logging: bool = False,
        cancel: bool = False,
    ) -> str:
        # kumod logs the reason in each AdminBounce record: the mark makes those records read as cancellations.
        reason = CANCEL_MARK + reason if cancel else reason.removeprefix(CANCEL_MARK)
        body = _target_body(target, "bounce") | {"reason": reason, "suppress_logging": suppress_logging}
        if duration:
            body["duration"] = duration
        response = await self._request("POST", "/api/admin/bounce/v1", json=body)
        return self._decode(response, _IdResponse).id

    async def cancel_bounce(self, bounce_id: str) -> None:
        await self._request("DELETE", "/api/admin/bounce/v1", json={"id": bounce_id})

    async def list_bounces(self) -> list[StandingBounce]:
        response = await self._request("GET", "/api/admin/bounce/v1")
        return [
            StandingBounce(
                id=b.id,
                reason=b.reason,
                domain=b.domain,
                tenant=b.tenant,
                campaign=b.campaign,
                routing_domain=b.routing_domain,
                remaining=b.duration,
                total_bounced=b.total_bounced,
            )
            for b in self._decode(response, list[_BounceEntry])
        ]

    async def perform(self, call: OperationCall) -> OperationDone:
        """kumod's operations: suspend and resume by its suspension resource; bounce, cancel and purge are
        bounces (cancel marked so its AdminBounce records read as cancellations, purge unlogged); retry is a
        rebind that changes nothing and flushes."""
        op, target, reason = call.operation, call.target, call.reason
        KUMOMTA_CAPABILITIES.support(op, per_message=call.messages is not None)
        if op is Op.suspend:
            return OperationDone(reference=await self.suspend(target, reason=reason, duration=call.duration))
        if op is Op.resume:
            held = await self.list_suspensions()
            lifted = [s.id for s in held if lifts(s, target, call.suspension_id, call.recorded.get(s.id))]
            for ident in lifted:
                await self.resume(ident)
            return OperationDone(reference=",".join(lifted) or None)
        if op in (Op.bounce, Op.cancel, Op.purge):
            reference = await self.bounce(
                target,
                reason=reason,
                duration=call.duration or (PURGE_DURATION if op is Op.purge else None),
                suppress_logging=op is Op.purge,
                cancel=op is not Op.bounce,
            )
            return OperationDone(reference=reference)
        if op is Op.retry:
            await self.retry(target, reason=reason)
            return OperationDone()
        if op is Op.rebind:
            await self.rebind(target, reason=reason, data=dict(call.data or {}))
            return OperationDone()
        raise UnsupportedOperation(KUMOMTA_CAPABILITIES.refused.get(op, f"KumoMTA has no {op.value}"))

    async def retry(self, target: Target, *, reason: str) -> None:
        # A rebind that changes nothing but flushes makes every matching message due now.
        await self._rebind(target, reason=reason, data={})

    async def rebind(self, target: Target, *, reason: str, data: dict[str, str]) -> None:
        await self._rebind(target, reason=reason, data=data)

    async def _rebind(self, target: Target, *, reason: str, data: dict[str, str]) -> None:
        body = _target_body(target, "rebind") | {
            "reason": reason,
            "suppress_logging": False,
            "data": data,
            "trigger_rebind_event": False,
            "always_flush": True,
        }
        await self._request("POST", "/api/admin/rebind/v1", json=body)


def _target_body(target: Target, family: str) -> dict[str, Any]:
    """The selecting part of a kumod request: exactly the target, or refused before anything is sent."""
    supported = KUMOD_TARGET_FIELDS[family]
    given = target.fields()
    if target.everything:
        if given != {"everything"}:
            raise TargetNotExpressible("`everything` selects every queue: give it alone", field="everything")
        return {}  # kumod reads a request naming no queue as every queue: sent only when asked for by name
    if target.is_empty():
        # An empty queue_names list or no field at all: kumod would read either as "every queue".
        raise TargetNotExpressible(
            "an operation needs a domain, tenant, campaign, routing_domain or queue_names", field="domain"
        )
    if not given <= supported or ("queue_names" in given and given != {"queue_names"}):
        # kumod ignores the criteria beside queue_names, and drops fields it lacks: either would widen the target.
        raise TargetNotExpressible(
            f"kumod's {family} request cannot carry {', '.join(sorted(given - {'everything'}))} together",
            field=sorted(given - supported)[0] if given - supported else "queue_names",
        )
    if target.queue_names:
        return {"queue_names": list(target.queue_names)}
    fields = {
        "domain": target.domain,
        "tenant": target.tenant,
        "campaign": target.campaign,
        "routing_domain": target.routing_domain,
    }
    return {name: value for name, value in fields.items() if value}
