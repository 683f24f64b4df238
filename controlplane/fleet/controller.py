"""HTTP routes of the fleet registry (scope ``fleet:manage``)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.fleet.schema import Node, NodeCreate, NodeUpdate
from controlplane.services import Services

AnyRequest = Request[Principal, Any, Any]


class NodesController(Controller):
    path = "/api/v1/nodes"
    tags = ["fleet"]
    guards = [requires(Scope.fleet_manage)]

    @post("/", summary="Register a node; credentials are stored encrypted and never returned")
    async def create_node(
        self, request: AnyRequest, services: NamedDependency[Services], data: JSONBody[NodeCreate]
    ) -> Node:
        return await services.fleet.create(data, actor=request.user.actor)

    @get("/", summary="All nodes with their last health check")
    async def list_nodes(self, services: NamedDependency[Services]) -> list[Node]:
        return await services.fleet.all()

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
