"""HTTP routes: KumoMTA ingestion, event history, dead letters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, FromQuery, QueryParameter

from adapters.kumomta.events import RecordType
from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import FLEET, SCOPED
from controlplane.events.schema import DeadLetterPage, EventPage, IngestResult, StoredEvent
from controlplane.events.service import decode_body
from controlplane.instants import Instant
from controlplane.services import Services

AnyRequest = Request[Principal, Any, Any]

_STRING = Schema(type=OpenAPIType.STRING)
_LOG_RECORD = Schema(
    type=OpenAPIType.OBJECT,
    title="KumoLogRecord",
    description="A KumoMTA log record (JsonLogRecord). Fields beyond these are accepted and stored verbatim.",
    required=["type", "id", "sender", "recipient", "queue", "timestamp"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, examples=["Delivery"]),
        "id": _STRING,
        "sender": _STRING,
        "recipient": _STRING,
        "queue": Schema(type=OpenAPIType.STRING, description="campaign:tenant@domain!routing_domain"),
        "timestamp": Schema(type=OpenAPIType.INTEGER, description="Unix seconds"),
        "event_time": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
        "created": Schema(type=OpenAPIType.INTEGER),
        "site": _STRING,
        "size": Schema(type=OpenAPIType.INTEGER),
        "num_attempts": Schema(type=OpenAPIType.INTEGER),
        "response": Schema(type=OpenAPIType.OBJECT),
        "bounce_classification": _STRING,
        "egress_pool": _STRING,
        "meta": Schema(type=OpenAPIType.OBJECT),
        "headers": Schema(type=OpenAPIType.OBJECT),
    },
    additional_properties=True,
)


@dataclass
class KumoIngestOperation(Operation):
    """The body is read raw (so one bad record cannot fail its batch); this documents its shape."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="One log record (log_hooks:new_json) or an array of them (a send_batch hook).",
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(one_of=[_LOG_RECORD, Schema(type=OpenAPIType.ARRAY, items=_LOG_RECORD)])
                )
            },
        )


class EventsController(Controller):
    path = "/api/v1/events"
    tags = ["events"]
    opt = SCOPED

    @post(
        "/ingest/kumomta",
        guards=[requires(Scope.events_ingest)],
        operation_class=KumoIngestOperation,
        summary="Ingest KumoMTA log records",
        description="202 once every accepted record is durable. Records that do not decode or break a rule are "
        "answered in `rejected` and kept as dead letters; the others are stored. Never 5xx for a database outage: "
        "records are spooled to disk and replayed. 413 for more records than MTACTL_INGEST_MAX_RECORDS_PER_REQUEST.",
        status_code=202,
    )
    async def ingest_kumomta(self, request: AnyRequest, services: NamedDependency[Services]) -> Response[IngestResult]:
        principal, settings = request.user, services.settings
        records, dead, rejected = decode_body(
            await request.body(),
            api_key=principal.name,
            tenant=principal.tenant_id,
            max_records=settings.ingest_max_records_per_request,
            max_dead_letters=settings.ingest_max_dead_letters_per_request,
        )
        outcome = await services.ingest.submit(records, dead)
        if outcome.rejected:  # refused when written (another tenant's message, or by the database)
            rejected = sorted([*rejected, *outcome.rejected], key=lambda r: r.index)
        return Response(
            IngestResult(
                accepted=outcome.accepted, duplicates=outcome.duplicates, rejected=rejected, spooled=outcome.spooled
            ),
            status_code=202,
        )

    @get("/", guards=[requires(Scope.email_read, Scope.analytics_read)], summary="Events, newest first by default")
    async def list_events(
        self,
        services: NamedDependency[Services],
        tenant_filter: NamedDependency[str | None],
        since: Annotated[Instant | None, QueryParameter(description="Inclusive")] = None,
        until: Annotated[Instant | None, QueryParameter(description="Exclusive")] = None,
        type: Annotated[list[RecordType] | None, QueryParameter(description="Record type (repeatable)")] = None,
        domain: FromQuery[str | None] = None,
        order: FromQuery[Literal["asc", "desc"]] = "desc",
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> EventPage:
        return await services.events.list_events(
            since=since,
            until=until,
            types=[t.value for t in type] if type else None,
            domain=domain,
            tenant_id=tenant_filter,
            order=order,
            limit=limit,
            cursor=cursor,
        )

    @get(
        "/dead-letters",
        guards=[requires(Scope.admin)],
        opt=FLEET,
        summary="Records that could not be ingested, newest first",
    )
    async def dead_letters(
        self,
        services: NamedDependency[Services],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> DeadLetterPage:
        return await services.events.dead_letters(limit=limit, cursor=cursor)


class MessageEventsController(Controller):
    path = "/api/v1/messages"
    tags = ["events"]
    guards = [requires(Scope.email_read)]
    opt = SCOPED

    @get("/{message_id:str}/events", summary="A message's events, oldest first")
    async def message_events(
        self, services: NamedDependency[Services], tenant: NamedDependency[str | None], message_id: FromPath[uuid.UUID]
    ) -> list[StoredEvent]:
        # Reading the message first applies tenant confinement (404 for another tenant's message).
        message = await services.queues.get_message(message_id, tenant_id=tenant)
        return await services.events.message_events(message.id)
