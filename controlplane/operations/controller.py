"""HTTP routes for queue operations (scope ``queue:manage``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import SCOPED
from controlplane.operations.duration import check_duration
from controlplane.operations.schema import OperationRecord, OperationRequest
from controlplane.services import Services

MAX_WAIT_SECONDS = 60.0


class OperationsController(Controller):
    path = "/api/v1/operations"
    tags = ["operations"]
    guards = [requires(Scope.queue_manage)]
    opt = SCOPED

    @post(
        "/",
        summary="Run (or, with dry_run, plan) an operation across the fleet",
        description=(
            "Answers 200 with the finished operation, or 202 with it still `running` when it takes longer than "
            "`wait` seconds (default MTACTL_OPERATION_WAIT_SECONDS); follow its progress at the Location given."
        ),
        status_code=200,
        responses={202: ResponseSpec(data_container=OperationRecord, description="Still running")},
    )
    async def run_operation(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        data: JSONBody[OperationRequest],
        wait: Annotated[float | None, QueryParameter(ge=0, le=MAX_WAIT_SECONDS)] = None,
    ) -> Response[OperationRecord]:
        check_duration(data.duration)
        wait = services.settings.operation_wait_seconds if wait is None else wait
        record = await services.operations.submit(data, actor=request.user.actor, tenant=tenant, wait=wait)
        if record.status == "running":
            return Response(record, status_code=202, headers={"Location": f"/api/v1/operations/{record.id}"})
        return Response(record, status_code=200)

    @get("/", summary="Operations, newest first")
    async def list_operations(
        self,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> list[OperationRecord]:
        return await services.operations.recent(limit=limit, tenant=tenant)

    @get("/{operation_id:str}", summary="One operation with its progress and per-node outcome")
    async def get_operation(
        self,
        services: NamedDependency[Services],
        tenant: NamedDependency[str | None],
        operation_id: FromPath[uuid.UUID],
    ) -> OperationRecord:
        return await services.operations.get(operation_id, tenant=tenant)
