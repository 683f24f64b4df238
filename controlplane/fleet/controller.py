"""HTTP routes of the fleet registry (scope ``fleet:manage``)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import FLEET, SCOPED
from controlplane.fleet.schema import Hold, HoldKind, Node, NodeCreate, NodeSync, NodeUpdate
from controlplane.services import Services

AnyRequest = Request[Principal, Any, Any]


class NodesController(Controller):
    path = "/api/v1/nodes"
    tags = ["fleet"]
    guards = [requires(Scope.fleet_manage)]
    opt = FLEET

    @post("/", summary="Register a node; credentials are stored encrypted and never returned")
    async def create_node(
        self, request: AnyRequest, services: NamedDependency[Services], data: JSONBody[NodeCreate]
    ) -> Node:
        return await services.fleet.create(data, actor=request.user.actor)

    @get("/", summary="All nodes with their last health check")
    async def list_nodes(self, services: NamedDependency[Services]) -> list[Node]:
        return await services.fleet.all()

    @post("/sync", summary="Read every node's queues, suspensions and bounces now", status_code=200)
    async def sync_nodes(self, services: NamedDependency[Services]) -> list[NodeSync]:
        return await services.fleet_state.sync()

    @get("/{node:str}", summary="One node, by id or name")
    async def get_node(self, services: NamedDependency[Services], node: FromPath[str]) -> Node:
        return await services.fleet.get(node)

    @patch("/{node:str}", summary="Change a node's name, URL, labels or credentials")
    async def update_node(
        self, request: AnyRequest, services: NamedDependency[Services], node: FromPath[str], data: JSONBody[NodeUpdate]
    ) -> Node:
        return await services.fleet.update(node, data, actor=request.user.actor)

    @delete("/{node:str}", summary="Remove a node from the registry", status_code=200)
    async def delete_node(self, request: AnyRequest, services: NamedDependency[Services], node: FromPath[str]) -> Node:
        return await services.fleet.delete(node, actor=request.user.actor)


def holds_controller(kind: HoldKind, route: str, verb: str) -> type[Controller]:
    """Listing and lifting one kind of hold (suspensions, standing bounces) across the fleet."""

    class HoldsController(Controller):
        path = route
        tags = ["operations"]
        guards = [requires(Scope.queue_manage)]
        opt = SCOPED

        @get("/", summary=f"Active {kind.value}s on every node, as last synced")
        async def list_holds(
            self, services: NamedDependency[Services], tenant: NamedDependency[str | None]
        ) -> list[Hold]:
            return await services.fleet_state.holds(kind, tenant=tenant)

        @delete("/{hold_id:str}", summary=f"{verb} a {kind.value} on every node holding it", status_code=200)
        async def lift_hold(
            self,
            request: AnyRequest,
            services: NamedDependency[Services],
            tenant: NamedDependency[str | None],
            hold_id: FromPath[str],
            reason: FromQuery[str | None] = None,
        ) -> list[Hold]:
            return await services.fleet_state.lift(
                kind, hold_id, actor=request.user.actor, reason=reason, tenant=tenant
            )

    HoldsController.__name__ = f"{kind.value.title()}sController"
    return HoldsController


SuspensionsController = holds_controller(HoldKind.suspension, "/api/v1/suspensions", "Resume (lift)")
BouncesController = holds_controller(HoldKind.bounce, "/api/v1/bounces", "Cancel")
