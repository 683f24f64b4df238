"""HTTP routes: ingestion (one route per event source), event history, dead letters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.router import Router

from adapters.model.events import EventSource
from adapters.sources import EVENT_SOURCES, RecordType
from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import FLEET, SCOPED
from controlplane.events.schema import DeadLetterPage, EventPage, IngestResult, StoredEvent
from controlplane.events.service import FORM_MEDIA_TYPE, JSON_MEDIA_TYPE, decode_body
from controlplane.instants import Instant
from controlplane.services import Services

AnyRequest = Request[Principal, Any, Any]


def _schema(document: dict[str, Any]) -> Schema:
    """A source's JSON Schema (the subset sources use) as Litestar's OpenAPI Schema."""
    return Schema(
        type=OpenAPIType(document["type"]) if "type" in document else None,
        title=document.get("title"),
        description=document.get("description"),
        format=OpenAPIFormat(document["format"]) if "format" in document else None,
        required=document.get("required"),
        examples=document.get("examples"),
        properties={name: _schema(value) for name, value in document["properties"].items()}
        if "properties" in document
        else None,
        additional_properties=document.get("additionalProperties"),
    )


def _ingest_operation(source: EventSource) -> type[Operation]:
    record = _schema(source.record_schema)
    content = {
        JSON_MEDIA_TYPE: OpenAPIMediaType(schema=Schema(one_of=[record, Schema(type=OpenAPIType.ARRAY, items=record)]))
    }
    description = "One log record or an array of them."
    if source.form_schema is not None:
        content[FORM_MEDIA_TYPE] = OpenAPIMediaType(schema=_schema(source.form_schema))
        description += f" As {FORM_MEDIA_TYPE} (unless it starts as JSON does): one {source.form_schema['title']}."

    @dataclass
    class IngestOperation(Operation):
        """The body is read raw (so one bad record cannot fail its batch); this documents its shape."""

        def __post_init__(self) -> None:
            self.request_body = RequestBody(required=True, description=description, content=content)
            # the key as a Bearer token, or as the password of HTTP Basic (controlplane.auth.guard)
            self.security = [{"apiKey": []}, {"ingestBasic": []}]

    return IngestOperation


def ingest_handler(source: EventSource) -> Any:
    """``POST /api/v1/events/ingest/<source>``: one route per event source of ``adapters.sources``."""

    async def ingest(request: AnyRequest, services: NamedDependency[Services]) -> Response[IngestResult]:
        principal, settings = request.user, services.settings
        records, dead, rejected = decode_body(
            await request.body(),
            content_type=request.content_type[0].lower(),
            source=source,
            api_key=principal.name,
            tenant=principal.tenant_id,
            max_records=settings.ingest_max_records_per_request,
            max_dead_letters=settings.ingest_max_dead_letters_per_request,
        )
        outcome = await services.ingest.submit(records, dead)
        if outcome.rejected:  # refused when written (another tenant's message, or by the database)
            rejected = sorted([*rejected, *outcome.rejected], key=lambda r: r.index)
        services.ingest.outcomes.update(
            accepted=outcome.accepted, duplicate=outcome.duplicates, rejected=len(rejected), spooled=outcome.spooled
        )
        return Response(
            IngestResult(
                accepted=outcome.accepted, duplicates=outcome.duplicates, rejected=rejected, spooled=outcome.spooled
            ),
            status_code=202,
        )

    return post(
        f"/ingest/{source.name}",
        guards=[requires(Scope.events_ingest)],
        operation_class=_ingest_operation(source),
        operation_id=f"Ingest{source.title.replace(' ', '')}LogRecords",
        summary=f"Ingest {source.title} log records",
        description="202 once every accepted record is appended to the event log (the message mirror and the "
        "counters follow it within seconds: GET /api/v1/health/detailed shows their lag). Records that do not "
        "decode or break a rule are answered in `rejected` and kept as dead letters; the others are stored. "
        "Never 5xx for a database outage: records are spooled to disk and replayed. 413 for more records than "
        "MTACTL_INGEST_MAX_RECORDS_PER_REQUEST.",
        status_code=202,
        name=f"ingest-{source.name}",
    )(ingest)


def ingest_router() -> Router:
    return Router(
        "/api/v1/events",
        route_handlers=[ingest_handler(source) for source in EVENT_SOURCES.values()],
        tags=["events"],
        opt=SCOPED,
    )


class EventsController(Controller):
    path = "/api/v1/events"
    tags = ["events"]
    opt = SCOPED

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
