"""Bearer-key authentication (middleware) and scope checks (guards)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from controlplane.auth.schema import Principal, Scope
from controlplane.auth.service import ApiKeyService
from controlplane.db.engine import database_unavailable
from controlplane.errors import Forbidden, Unauthenticated

# Paths anyone may read: liveness and the API description.
PUBLIC_PATHS = ["^/api/v1/health$", "^/api/v1/health/detailed$", "^/schema"]


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing API key: send 'Authorization: Bearer mq_live_…'", field="Authorization")
        keys: ApiKeyService = connection.app.state.services.keys
        if connection.scope["path"].startswith(HOLD_WHILE_DATABASE_DOWN):
            principal = await _authenticate_patiently(keys, token.strip())
        else:
            principal = await keys.authenticate(token.strip())
        if principal is None:
            raise Unauthenticated("invalid or revoked API key", field="Authorization")
        return AuthenticationResult(user=principal, auth=principal.key_id)


# An MTA treats a 5xx as final and drops what it posted, so on these paths a key that cannot be checked for want
# of a database is retried, holding the request, until the check succeeds or the MTA gives up and retries.
HOLD_WHILE_DATABASE_DOWN = "/api/v1/events/ingest/"
HOLD_LIMIT_SECONDS = 300.0


async def _authenticate_patiently(keys: ApiKeyService, token: str) -> Principal | None:
    delay, waited = 0.2, 0.0
    while True:
        try:
            return await keys.authenticate(token)
        except Exception as exc:
            if not database_unavailable(exc) or waited >= HOLD_LIMIT_SECONDS:
                raise
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 5.0)


def requires(*scopes: Scope) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard admitting keys that hold any of ``scopes`` (``admin`` holds them all)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if not any(principal.allows(scope) for scope in scopes):
            wanted = " or ".join(repr(s.value) for s in scopes)
            raise Forbidden(f"this API key lacks the {wanted} scope", field="scopes")

    guard.__name__ = "requires_" + "_or_".join(s.name for s in scopes)
    return guard
