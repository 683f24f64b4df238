"""API key management over HTTP (scope ``admin``). The CLI offers the same through ``mtactl keys``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from controlplane.auth.guard import requires
from controlplane.auth.schema import ApiKeyCreate, ApiKeyInfo, CreatedApiKey, Principal, Scope
from controlplane.auth.tenancy import FLEET
from controlplane.services import Services


class ApiKeysController(Controller):
    path = "/api/v1/keys"
    tags = ["auth"]
    guards = [requires(Scope.admin)]
    opt = FLEET

    @post("/", summary="Create a key; the secret is in this response only")
    async def create_key(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services], data: JSONBody[ApiKeyCreate]
    ) -> CreatedApiKey:
        return await services.keys.create(
            name=data.name, scopes=[s.value for s in data.scopes], tenant_id=data.tenant_id, actor=request.user.actor
        )

    @get("/", summary="List keys (never their secrets)")
    async def list_keys(self, services: NamedDependency[Services]) -> list[ApiKeyInfo]:
        return await services.keys.list()

    @delete("/{key_ref:str}", summary="Revoke a key by id, prefix or name", status_code=200)
    async def revoke_key(
        self, request: Request[Principal, Any, Any], services: NamedDependency[Services], key_ref: FromPath[str]
    ) -> ApiKeyInfo:
        return await services.keys.revoke(key_ref, actor=request.user.actor)
