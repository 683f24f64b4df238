"""HTTP routes of the suppression list (scope ``suppression:manage``; the export also ``events:ingest``, the scope
the MTAs' own keys hold, for the KumoMTA snippet). Thin: parse, confine to the caller's tenant, call the service."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import SCOPED
from controlplane.errors import ErrorBody, InvalidInput
from controlplane.instants import Instant
from controlplane.services import Services
from controlplane.suppressions.schema import (
    ImportReport,
    Suppression,
    SuppressionCreate,
    SuppressionDetail,
    SuppressionPage,
    SuppressionReason,
    SuppressionRemoval,
    SuppressionStats,
)
from controlplane.suppressions.service import csv_of, kumomta_list

AnyRequest = Request[Principal, Any, Any]
TEXT = Schema(type=OpenAPIType.STRING)
# No API input may hold a NUL (controlplane.protocol); the CSV body says so like every other string.
TEXT_IN = Schema(type=OpenAPIType.STRING, pattern="^[^\\u0000]*$")


class ScopeFilter(enum.StrEnum):
    global_ = "global"
    tenant = "tenant"


class ExportFormat(enum.StrEnum):
    csv = "csv"
    json = "json"
    kumomta = "kumomta"


@dataclass
class ImportOperation(Operation):
    """The body is CSV, read raw (so that each bad row is reported, not the whole body refused)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="CSV: `email,reason,tenant_id,created_at,expires_at,source_event_id` (the export's "
            "columns; all but email optional, a header line optional)",
            content={"text/csv": OpenAPIMediaType(schema=TEXT_IN), "text/plain": OpenAPIMediaType(schema=TEXT_IN)},
        )


@dataclass
class ExportOperation(Operation):
    """The export answers CSV (default), JSON or the KumoMTA snippet's list, as `format` says."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        content = getattr(ok, "content", None)
        if content is not None:
            content["text/csv"] = OpenAPIMediaType(schema=TEXT)
            content["text/plain"] = OpenAPIMediaType(schema=TEXT)


MANAGE = [requires(Scope.suppression_manage)]
Tenant = Annotated[str | None, QueryParameter(min_length=1, max_length=100)]


class SuppressionsController(Controller):
    path = "/api/v1/suppressions"
    tags = ["suppressions"]
    # Guards per route: a controller's guard would also bind the export, which the MTAs' keys read too.
    opt = SCOPED

    @post(
        "/",
        guards=MANAGE,
        summary="Suppress an address (globally, or for a tenant)",
        description="201 with the entry and what enforcing it did: queued messages cancelled where the MTA can "
        "cancel one message (`cancel_operation_id`), the others listed (`held_messages`), the nodes whose own "
        "list now carries it (`pushed_to`). 409 when the address already has an entry in force in that scope.",
        status_code=201,
    )
    async def add(
        self,
        request: AnyRequest,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        data: JSONBody[SuppressionCreate],
    ) -> SuppressionDetail:
        return await services.suppressions.add(data, actor=request.user.actor, tenant=tenant)

    @get("/", guards=MANAGE, summary="Entries in force, newest first (cursor-paged)")
    async def list_entries(
        self,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        tenant_filter: NamedDependency[str | None],
        reason: FromQuery[SuppressionReason | None] = None,
        entry_scope: Annotated[
            ScopeFilter | None,
            QueryParameter(name="scope", description="global: global entries only; tenant: tenants' only"),
        ] = None,
        search: Annotated[
            str | None, QueryParameter(max_length=320, description="Case-insensitive part of the address")
        ] = None,
        domain: Annotated[str | None, QueryParameter(max_length=255)] = None,
        created_after: Annotated[Instant | None, QueryParameter(description="Inclusive")] = None,
        created_before: Annotated[Instant | None, QueryParameter(description="Exclusive")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=2000)] = None,
    ) -> SuppressionPage:
        return await services.suppressions.entries(
            tenant=tenant,
            tenant_id=tenant_filter,
            scope=entry_scope.value if entry_scope else None,
            reason=reason,
            search=search,
            domain=domain,
            created_after=created_after.plain() if created_after else None,
            created_before=created_before.plain() if created_before else None,
            limit=limit,
            cursor=cursor,
        )

    @delete(
        "/",
        guards=MANAGE,
        summary="Lift an address's entry (by ?email=, in the scope of ?tenant_id=, else the global one)",
        responses={404: ResponseSpec(data_container=ErrorBody, description="No entry in force in that scope")},
        status_code=200,
    )
    async def remove_by_query(
        self,
        request: AnyRequest,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        email: Annotated[str, QueryParameter(min_length=1, max_length=320)],
        tenant_id: Tenant = None,
    ) -> SuppressionRemoval:
        return await services.suppressions.remove(email, actor=request.user.actor, tenant=tenant, tenant_id=tenant_id)

    @get("/stats", guards=MANAGE, summary="Entries in force: in all, by reason, global and per tenant")
    async def stats(
        self,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        tenant_filter: NamedDependency[str | None],
    ) -> SuppressionStats:
        return await services.suppressions.stats(tenant=tenant, tenant_id=tenant_filter)

    @get(
        "/export",
        summary="Every entry in force, as CSV (default), JSON, or the KumoMTA snippet's list",
        description="`format=kumomta`: one line per entry, `email<TAB>tenant<TAB>expires` (tenant empty for a "
        "global entry, expires in Unix seconds or empty), read by mta_plugins/kumomta/mtactl_suppression.lua.",
        guards=[requires(Scope.suppression_manage, Scope.events_ingest)],
        operation_class=ExportOperation,
    )
    async def export(
        self,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        tenant_filter: NamedDependency[str | None],
        format: FromQuery[ExportFormat] = ExportFormat.csv,
    ) -> Response[list[Suppression]]:
        entries = await services.suppressions.export(tenant=tenant, tenant_id=tenant_filter)
        if format is ExportFormat.json:
            return Response(entries, media_type="application/json")
        if format is ExportFormat.kumomta:
            return Response("".join(kumomta_list(entries)), media_type="text/plain")  # type: ignore[arg-type]
        headers = {"Content-Disposition": 'attachment; filename="suppressions.csv"'}
        return Response("".join(csv_of(entries)), media_type="text/csv", headers=headers)  # type: ignore[arg-type]

    @post(
        "/import",
        guards=MANAGE,
        summary="Import entries from CSV: good rows kept, bad rows reported by row number and field",
        description="An address already in force in the same scope is left as it is: importing a file twice adds "
        "nothing the second time.",
        status_code=200,
        operation_class=ImportOperation,
    )
    async def import_csv(
        self, request: AnyRequest, services: NamedDependency[Services], tenant: NamedDependency[str | None]
    ) -> ImportReport:
        body = await request.body()
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("the CSV is not UTF-8", field="body") from None
        if "\x00" in text:
            raise InvalidInput("the CSV holds a NUL character", field="body")
        return await services.suppressions.import_csv(text, actor=request.user.actor, tenant=tenant)

    @get("/{email:str}", guards=MANAGE, summary="An address's entry in force (404: not suppressed)")
    async def get_entry(
        self, services: NamedDependency[Services], tenant: NamedDependency[str | None], email: FromPath[str]
    ) -> SuppressionDetail:
        return await services.suppressions.get(email, tenant=tenant)

    @delete(
        "/{email:str}",
        guards=MANAGE,
        summary="Lift an address's entry (in the scope of ?tenant_id=, else the global one)",
        status_code=200,
    )
    async def remove(
        self,
        request: AnyRequest,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        email: FromPath[str],
        tenant_id: Tenant = None,
    ) -> SuppressionRemoval:
        return await services.suppressions.remove(email, actor=request.user.actor, tenant=tenant, tenant_id=tenant_id)
