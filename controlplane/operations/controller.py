"""HTTP routes for queue operations (scope ``queue:manage``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.errors import InvalidInput
from controlplane.operations.schema import OperationRecord, OperationRequest
from controlplane.services import Services


class OperationsController(Controller):
    path = "/api/v1/operations"
    tags = ["operations"]
    guards = [requires(Scope.queue_manage)]

    @post("/", summary="Run (or, with dry_run, plan) an operation across the fleet", status_code=200)
    async def run_operation(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        data: JSONBody[OperationRequest],
    ) -> OperationRecord:
        if request.user.tenant_id is not None and data.tenant != request.user.tenant_id:
            raise InvalidInput("a tenant-bound key must target its own tenant", field="tenant")
        return await services.operations.run(data, actor=request.user.actor)

    @get("/", summary="Operations, newest first")
    async def list_operations(
        self, services: NamedDependency[Services], limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50
    ) -> list[OperationRecord]:
        return await services.operations.recent(limit=limit)

    @get("/{operation_id:str}", summary="One operation with its per-node outcome")
    async def get_operation(self, services: NamedDependency[Services], operation_id: FromPath[str]) -> OperationRecord:
        try:
            ident = uuid.UUID(operation_id)
        except ValueError:
            raise InvalidInput(f"{operation_id!r} is not an operation id", field="id") from None
        return await services.operations.get(ident)
