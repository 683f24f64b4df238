"""HTTP routes of egress sources (daily limits, sending windows) and capacity. Egress sources are shared by every
tenant, so these are fleet routes: a tenant-bound key is refused."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import FLEET
from controlplane.capacity.schema import CapacityEstimate, CapacityReport, Source, SourceList, SourceSpec
from controlplane.capacity.service import NAME_PATTERN
from controlplane.services import Services

AnyRequest = Request[Principal, Any, Any]


class SourcesController(Controller):
    path = "/api/v1/sources"
    tags = ["capacity"]
    guards = [requires(Scope.queue_manage)]
    opt = FLEET

    @get("/", summary="Egress sources with their daily limit and sending window")
    async def list_sources(self, services: NamedDependency[Services]) -> SourceList:
        return await services.capacity.all()

    @put("/{name:str}", summary="Set an egress source's daily limit and sending window (created if new)")
    async def put_source(
        self,
        request: AnyRequest,
        services: NamedDependency[Services],
        name: Annotated[str, PathParameter(pattern=NAME_PATTERN, description="the egress source (KumoMTA) or zone")],
        data: JSONBody[SourceSpec],
    ) -> Source:
        return await services.capacity.put(name, data, actor=request.user.actor)

    @get("/{name:str}", summary="One egress source")
    async def get_source(self, services: NamedDependency[Services], name: FromPath[str]) -> Source:
        return await services.capacity.get(name)

    @delete("/{name:str}", summary="Forget an egress source (its holds are released by the next pass)", status_code=200)
    async def delete_source(
        self, request: AnyRequest, services: NamedDependency[Services], name: FromPath[str]
    ) -> Source:
        return await services.capacity.delete(name, actor=request.user.actor)


class CapacityController(Controller):
    path = "/api/v1/capacity"
    tags = ["capacity"]
    guards = [requires(Scope.analytics_read)]
    opt = FLEET

    @get("/", summary="Per egress source: used and remaining today, its window, what is held and what is at risk")
    async def capacity(self, services: NamedDependency[Services]) -> CapacityReport:
        return await services.capacity.capacity()

    @get("/estimate", summary="When N messages would be sent, by seed 002's rule (most remaining capacity first)")
    async def estimate(
        self,
        services: NamedDependency[Services],
        messages: Annotated[int, QueryParameter(ge=1, le=1_000_000_000_000)],
        # Named apart from the app's `tenant` dependency (the caller's binding), which would take its place.
        for_tenant: Annotated[
            str | None,
            QueryParameter(name="tenant", min_length=1, max_length=100, description="Only the sources open to it"),
        ] = None,
    ) -> CapacityEstimate:
        return await services.capacity.estimate(messages, tenant=for_tenant)
