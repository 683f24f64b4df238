"""ZoneMTA adapter over its HTTP API (lib/api-server.js, port 12080; shapes in fixtures/zonemta/api).

ZoneMTA keeps one row per recipient (queue id + seq) in its ``zone-queue`` collection and stores no status: a row
whose ``queued`` time has passed is due, one in the future is deferred. A row is deleted once delivered or
rejected. It has no pause API (zone-mta#287), no rebind and no priority: those are refused. It answers
``{"success": true}`` to DELETE and PUT of a message whatever happened (an unknown id; a row locked by a delivery
in progress is skipped silently), so every change made here is read back before it is reported.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from adapters.base import (
    Capabilities,
    MessageRef,
    MtaAdapter,
    MtaBadAnswer,
    MtaError,
    MtaRefused,
    NodeHealth,
    OperationCall,
    OperationDone,
    OperationSupport,
    QueueCounts,
    StandingBounce,
    Suspension,
    Target,
    UnsupportedOperation,
    queue_matches,
)
from adapters.http import DEFAULT_TIMEOUT_SECONDS, NodeAuth, NodeHttp
from adapters.model import QueueOperationType as Op
from adapters.model import normalize_address, recipient_domain
from adapters.model.observation import MTA_MESSAGE_ID, MessageObservation
from adapters.model.queue import MessageQueueStatus
from adapters.zonemta.mapping import recipient_uuid

# ZoneMTA caps a page of /queued at 1000 rows (api-server.js).
PAGE_SIZE = 1000
# A listing longer than this many pages (about 10M rows) is taken for a node that never ends its answer.
MAX_PAGES = 10_000
# Changes are sent to this many rows at once: a large cancel is not one request at a time, nor a flood.
CONCURRENT_CHANGES = 8

NO_PAUSE = "ZoneMTA has no pause API (zone-mta#287): it cannot suspend or resume a zone or a domain"
# mtactl's queue for a ZoneMTA row is its recipient's domain (the zone is the egress side): a target reaches
# ZoneMTA by domain, by those names, or everything. A tenant or campaign selects no ZoneMTA row (they have none).
ZONEMTA_TARGET_FIELDS = frozenset({"domain", "queue_names", "everything"})
_BY_DELETE = "deletes each matching row (DELETE /message/:id/:seq), read back to verify; no DSN is sent"
ZONEMTA_CAPABILITIES = Capabilities(
    operations={
        Op.cancel: OperationSupport(target_fields=ZONEMTA_TARGET_FIELDS, per_message=True, note=_BY_DELETE),
        Op.purge: OperationSupport(target_fields=ZONEMTA_TARGET_FIELDS, per_message=True, note=_BY_DELETE),
        Op.bounce: OperationSupport(target_fields=ZONEMTA_TARGET_FIELDS, per_message=True, note=_BY_DELETE),
        Op.retry: OperationSupport(
            target_fields=ZONEMTA_TARGET_FIELDS,
            per_message=True,
            note="makes each matching deferred row due now (PUT /message/:id/:seq), read back to verify",
        ),
    },
    refused={
        Op.suspend: NO_PAUSE,
        Op.resume: NO_PAUSE,
        Op.rebind: "ZoneMTA cannot move queued messages to another zone or route",
        Op.set_priority: "set_priority: ZoneMTA has no message priority",
    },
    lists_messages=True,
    # Pausing a zone would need ZoneMTA's config and a restart; its API has no pause (zone-mta#287).
    egress_hold_refusal="ZoneMTA has no pause API (zone-mta#287): a zone's traffic cannot be held",
    suppression_list=True,
)


class _Zone(msgspec.Struct):
    name: str


class _CounterEntry(msgspec.Struct):
    key: str
    value: int


class _Counter(msgspec.Struct):
    entries: list[_CounterEntry]
    rows: int


class _Counters(msgspec.Struct):
    active: _Counter
    deferred: _Counter


class QueuedRow(msgspec.Struct, frozen=True):
    """One row of ``GET /queued/:type/:zone``: one recipient of one queued message."""

    id: str
    zone: str
    recipient: str
    created: datetime
    queued: datetime
    deferred: int = 0


class _Listed(msgspec.Struct):
    rows: list[QueuedRow] = msgspec.field(name="list")


class DeliveryRow(msgspec.Struct):
    """One row of a message's ``GET /message/:id`` answer."""

    id: str
    seq: str
    zone: str
    recipient: str
    status: str = "QUEUED"  # QUEUED | DEFERRED
    lock: dict[str, Any] | None = None
    deferred: dict[str, Any] | None = None


class _SuppressedEntry(msgspec.Struct):
    id: str
    address: str | None = None
    domain: str | None = None


class _SuppressionList(msgspec.Struct):
    suppressed: list[_SuppressedEntry]


class _SuppressionChange(msgspec.Struct):
    """ZoneMTA answers 200 whether or not it did anything: ``error`` says it did not."""

    suppressed: _SuppressedEntry | None = None
    deleted: str | None = None
    error: str | None = None


class MessageInfo(msgspec.Struct):
    meta: dict[str, Any] | bool | None  # false when the stored message body is gone (getInfo)
    messages: list[DeliveryRow]


class RowChange(msgspec.Struct, frozen=True):
    changed: bool  # verified by reading the row back
    failure: str | None = None  # why a row that should have changed did not


class ZoneMtaClient(MtaAdapter):
    kind = "zonemta"

    def __init__(
        self,
        base_url: str,
        *,
        auth: NodeAuth | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        node: str | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        now: Any = None,
    ) -> None:
        """ZoneMTA has no auth of its own: ``auth`` is for the reverse proxy usually put in front of it."""
        self._api = NodeHttp(base_url, node=node, auth=auth, timeout=timeout, http=http, transport=transport)
        self.node = self._api.node
        self._now = now or (lambda: datetime.now(UTC))
        self._listed: list[QueuedRow] | None = None  # one listing per use of the adapter (a sync reads it twice)
        self._zones: list[str] = []  # the zones that listing read
        self._read_at = datetime.now(UTC)

    async def close(self) -> None:
        await self._api.close()

    # --- reading -------------------------------------------------------------------------------------------

    async def health(self) -> NodeHealth:
        now = datetime.now(UTC)
        try:
            await self.zones()
        except MtaError as exc:
            return NodeHealth(reachable=False, checked_at=now, detail=exc.message)
        return NodeHealth(reachable=True, checked_at=now)

    async def zones(self) -> list[str]:
        """Every zone, disabled ones too: a disabled zone still holds rows (ZoneMTA lists it only when asked)."""
        response = await self._api.request("GET", "/zones", params={"includeDisabled": "true"})
        return [z.name for z in self._api.decode(response, list[_Zone])]

    async def counters(self, zone: str) -> tuple[int, int]:
        """(due, deferred) rows of one zone, as ZoneMTA counts them."""
        answer = self._api.decode(await self._api.request("GET", f"/counter/zone/{_segment(zone)}"), _Counters)
        return answer.active.rows, answer.deferred.rows

    async def queued_rows(self, zone: str, kind: str) -> list[QueuedRow]:
        """Every row of a zone that is due (``kind`` "queued") or deferred, paging through ZoneMTA's listing.

        The listing is skip/limit over a collection that changes meanwhile: sorted by id, ascending, a row
        delivered between two pages shifts the next page by one, so pages overlap by one row and rows are kept
        once by (id, recipient). A row can still be missed when several vanish between two pages; the next
        sync sees it."""
        seen: dict[tuple[str, str], QueuedRow] = {}
        start = 0
        for _ in range(MAX_PAGES):
            params = {"start": str(start), "pageSize": str(PAGE_SIZE), "sort": "id", "order": "asc"}
            response = await self._api.request("GET", f"/queued/{kind}/{_segment(zone)}", params=params)
            page = self._api.decode(response, _Listed).rows
            for row in page:
                seen.setdefault((row.id, row.recipient), row)
            if len(page) < PAGE_SIZE:
                return list(seen.values())
            start += PAGE_SIZE - 1
        raise MtaBadAnswer(f"{self.node}: zone {zone} lists more than {MAX_PAGES} pages of {kind} rows", node=self.node)

    async def listed(self) -> list[QueuedRow]:
        """Every row the node holds, in every zone (read once per adapter use)."""
        if self._listed is None:
            self._read_at = self._now()  # what the listing says is true as of when it began, not when it ended
            self._zones = zones = await self.zones()
            pages = await asyncio.gather(*(self.queued_rows(z, k) for z in zones for k in ("queued", "deferred")))
            unique: dict[tuple[str, str], QueuedRow] = {}
            for rows in pages:
                for row in rows:
                    unique.setdefault((row.id, row.recipient), row)
            self._listed = list(unique.values())
        return self._listed

    async def queue_counts(self) -> QueueCounts:
        """Per recipient domain (mtactl's queue for a ZoneMTA row) from the listing; per zone, the egress side,
        from ZoneMTA's own counters (due + deferred)."""
        scheduled = Counter(recipient_domain(row.recipient) for row in await self.listed())
        zones = self._zones  # as the listing read them: one GET /zones per use, not two
        counts = await asyncio.gather(*(self.counters(z) for z in zones))
        return QueueCounts(
            scheduled=dict(scheduled), ready={z: due + later for z, (due, later) in zip(zones, counts, strict=True)}
        )

    async def queued_messages(self) -> list[MessageObservation]:
        """The rows as the mirror's observations: due rows ``ready``, future ones ``deferred``, as of now."""
        listed = await self.listed()
        return [observation(row, self._read_at) for row in listed]

    async def message(self, queue_id: str) -> MessageInfo | None:
        """``GET /message/:id``; None when ZoneMTA does not hold it."""
        try:
            response = await self._api.request("GET", f"/message/{_segment(queue_id)}")
        except MtaRefused as exc:
            if exc.status == 404:
                return None
            raise
        return self._api.decode(response, MessageInfo)

    async def inspect_message(self, message_id: str) -> dict[str, Any]:
        info = await self.message(message_id)
        if info is None:
            raise MtaRefused(f"{self.node}: no message {message_id}", status=404, node=self.node)
        found: dict[str, Any] = msgspec.to_builtins(info)
        return found

    async def list_suspensions(self) -> list[Suspension]:
        return []  # ZoneMTA has no suspensions

    async def list_bounces(self) -> list[StandingBounce]:
        return []

    # --- changing ------------------------------------------------------------------------------------------

    async def perform(self, call: OperationCall) -> OperationDone:
        op = call.operation
        ZONEMTA_CAPABILITIES.support(op, per_message=call.messages is not None)
        if call.messages is not None:
            rows = await self._rows_of(call.messages)
        else:
            selected = [r for r in await self.listed() if _selected(call.target, r)]
            if op is Op.retry:  # only deferred rows have a retry to bring forward
                now = self._now()
                selected = [r for r in selected if r.queued > now]
            rows = [(r.id, r.recipient) for r in selected]
        change = self._retry_row if op is Op.retry else self._delete_row
        limit = asyncio.Semaphore(CONCURRENT_CHANGES)

        async def one(queue_id: str, recipient: str) -> RowChange:
            async with limit:
                try:
                    return await change(queue_id, recipient)
                except MtaError as exc:  # this row's fault, not the others': reported with it
                    return RowChange(changed=False, failure=f"{queue_id} {recipient}: {exc.message}")

        results = await asyncio.gather(*(one(i, r) for i, r in rows))
        failures = [r.failure for r in results if r.failure]
        note = None
        if failures:
            shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
            note = f"{len(failures)} of {len(rows)} not changed: {shown}"
        return OperationDone(affected=sum(r.changed for r in results), note=note)

    async def _rows_of(self, messages: Iterable[MessageRef]) -> list[tuple[str, str]]:
        """The named messages this node holds (others are on another node, or gone)."""
        wanted: dict[str, set[str]] = {}
        for ref in messages:
            wanted.setdefault(ref.mta_message_id, set()).add(ref.recipient.lower())
        limit = asyncio.Semaphore(CONCURRENT_CHANGES)

        async def read(queue_id: str) -> MessageInfo | None:
            async with limit:
                return await self.message(queue_id)

        infos = await asyncio.gather(*(read(queue_id) for queue_id in wanted))
        return [
            (queue_id, row.recipient)
            for queue_id, info in zip(wanted, infos, strict=True)
            if info is not None
            for row in info.messages
            if row.recipient.lower() in wanted[queue_id]
        ]

    async def _delivery(self, queue_id: str, recipient: str) -> DeliveryRow | None:
        info = await self.message(queue_id)
        return next((r for r in (info.messages if info else []) if r.recipient == recipient), None)

    async def _delete_row(self, queue_id: str, recipient: str) -> RowChange:
        """Delete one recipient's row; counted only when it was there, unlocked, and is gone afterwards."""
        row = await self._delivery(queue_id, recipient)
        if row is None:
            return RowChange(changed=False)  # gone already (delivered meanwhile): nothing done, nothing claimed
        if row.lock:
            return RowChange(changed=False, failure=f"{queue_id}.{row.seq} is locked by a delivery in progress")
        await self._api.request("DELETE", f"/message/{_segment(queue_id)}/{_segment(row.seq)}")
        after = await self._delivery(queue_id, recipient)
        if after is None:
            return RowChange(changed=True)
        why = "locked by a delivery in progress" if after.lock else "still queued"
        return RowChange(changed=False, failure=f"{queue_id}.{row.seq} is {why}")

    async def _retry_row(self, queue_id: str, recipient: str) -> RowChange:
        """Make one deferred row due now; counted only when it was deferred and is due afterwards."""
        row = await self._delivery(queue_id, recipient)
        if row is None or row.status != "DEFERRED":
            return RowChange(changed=False)  # gone, or due already: nothing to bring forward
        await self._api.request("PUT", f"/message/{_segment(queue_id)}/{_segment(row.seq)}")
        after = await self._delivery(queue_id, recipient)
        if after is not None and after.status == "DEFERRED":
            return RowChange(changed=False, failure=f"{queue_id}.{row.seq} is still deferred")
        return RowChange(changed=after is not None)

    async def suppression_entries(self) -> dict[str, str]:
        """``GET /suppressionlist``: listed address -> ZoneMTA's id of its entry (domain entries left out)."""
        listed = self._api.decode(await self._api.request("GET", "/suppressionlist"), _SuppressionList).suppressed
        return {e.address: e.id for e in listed if e.address}

    async def suppress(self, address: str) -> str:
        """``POST /suppressionlist {address}``. ZoneMTA lower-cases the address and drops deliveries to it when
        the queue hands them out (a DROP log entry). The caller reads ``suppression_entries`` first: ZoneMTA
        would list an address pushed twice twice."""
        response = await self._api.request("POST", "/suppressionlist", json={"address": address.strip().lower()})
        answer = self._api.decode(response, _SuppressionChange)
        if answer.error or answer.suppressed is None:
            raise MtaRefused(f"{self.node}: suppressionlist: {answer.error or 'no entry made'}", status=200)
        return answer.suppressed.id

    async def unsuppress(self, reference: str) -> None:
        """``DELETE /suppressionlist`` with ``id`` in a JSON body (``?id=`` never reaches ZoneMTA's handler)."""
        response = await self._api.request("DELETE", "/suppressionlist", json={"id": reference})
        answer = self._api.decode(response, _SuppressionChange)
        if answer.error:
            raise MtaRefused(f"{self.node}: suppressionlist: {answer.error}", status=200)

    async def retry(self, target: Target, *, reason: str) -> None:
        await self.perform(OperationCall(operation=Op.retry, target=target, reason=reason))

    async def suspend(self, target: Target, *, reason: str, duration: str | None = None) -> str:
        raise UnsupportedOperation(NO_PAUSE)

    async def resume(self, suspension_id: str) -> None:
        raise UnsupportedOperation(NO_PAUSE)

    async def bounce(
        self,
        target: Target,
        *,
        reason: str,
        duration: str | None = None,
        suppress_logging: bool = False,
        cancel: bool = False,
    ) -> str:
        raise UnsupportedOperation("ZoneMTA keeps no standing bounce: cancel deletes the matching rows instead")

    async def cancel_bounce(self, bounce_id: str) -> None:
        raise UnsupportedOperation("ZoneMTA keeps no standing bounce")

    async def rebind(self, target: Target, *, reason: str, data: dict[str, str]) -> None:
        raise UnsupportedOperation(ZONEMTA_CAPABILITIES.refused[Op.rebind])


def _selected(target: Target, row: QueuedRow) -> bool:
    """Whether ``target`` selects this row: by its queue (the recipient's domain), the model's rule."""
    return queue_matches(target, recipient_domain(row.recipient))


def _segment(value: str) -> str:
    """One path segment, every reserved character escaped: ids and seqs are hex, but nothing in them may change
    the path, start a query or a fragment, or reach another message."""
    return quote(value, safe="")


def observation(row: QueuedRow, now: datetime) -> MessageObservation:
    """What a listed row says of its message, now: due rows are ``ready``, future ones ``deferred``."""
    deferred = row.queued > now
    domain = recipient_domain(row.recipient)
    return MessageObservation(
        id=recipient_uuid(row.id, row.recipient),
        message_id=row.id,
        queue_name=domain,
        recipient=normalize_address(row.recipient),
        sender="",
        domain=domain,
        status=MessageQueueStatus.deferred if deferred else MessageQueueStatus.ready,
        status_at=now,
        num_attempts=row.deferred,
        created_at=row.created,
        pool_name=row.zone,
        metadata={MTA_MESSAGE_ID: row.id, "zone": row.zone},
    )
