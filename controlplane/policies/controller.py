"""HTTP routes for throttling rules and their decisions (scope ``queue:manage``; fleet-wide: a rule acts on every
tenant's queues, so a tenant-bound key is refused)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import FLEET
from controlplane.policies.schema import DecisionList, Policy, PolicyInput, PolicyList, PolicyPatch
from controlplane.services import Services


class PoliciesController(Controller):
    path = "/api/v1/policies"
    tags = ["policies"]
    guards = [requires(Scope.queue_manage)]
    opt = FLEET

    @post("/", summary="Add a throttling rule", status_code=201)
    async def add_policy(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services], data: JSONBody[PolicyInput]
    ) -> Response[Policy]:
        policy = await services.policies.create(data, actor=request.user.actor)
        return Response(policy, status_code=201, headers={"Location": f"/api/v1/policies/{policy.id}"})

    @get("/", summary="Every throttling rule, by name")
    async def list_policies(self, services: NamedDependency[Services]) -> PolicyList:
        return await services.policies.list_all()

    @get(
        "/decisions",
        summary="What the rules decided, newest first",
        description="Each decision: the rule, the value of its scope, what it did (or in observe mode would have "
        "done), the operation that did it, and when and by whom it was lifted.",
    )
    async def list_decisions(
        self,
        services: NamedDependency[Services],
        policy_id: Annotated[uuid.UUID | None, QueryParameter(description="only this rule's")] = None,
        active: Annotated[bool, QueryParameter(description="only those not lifted yet")] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> DecisionList:
        return await services.policies.decisions(
            policy=str(policy_id) if policy_id else None, open_only=active, limit=limit, cursor=cursor
        )

    @get("/{policy:str}", summary="One throttling rule, by id or name")
    async def get_policy(self, services: NamedDependency[Services], policy: FromPath[str]) -> Policy:
        return await services.policies.get(policy)

    @patch("/{policy:str}", summary="Change a rule (e.g. its mode: observe or enforce)")
    async def change_policy(
        self,
        request: Request[Principal, Any, Any],
        services: NamedDependency[Services],
        policy: FromPath[str],
        data: JSONBody[PolicyPatch],
    ) -> Policy:
        return await services.policies.update(policy, data, actor=request.user.actor)

    @delete(
        "/{policy:str}",
        summary="Remove a rule (its decisions stay; an open one is still lifted at its end)",
        status_code=204,
    )
    async def remove_policy(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services], policy: FromPath[str]
    ) -> None:
        await services.policies.delete(policy, actor=request.user.actor)
