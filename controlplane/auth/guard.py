"""API-key authentication (middleware: a Bearer token, or on the ingest routes HTTP Basic) and scope checks
(guards)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import Receive, Send
from litestar.types import Scope as AsgiScope

from controlplane.auth.schema import Principal, Scope
from controlplane.auth.service import ApiKeyService
from controlplane.db.engine import database_unavailable
from controlplane.errors import Forbidden, Unauthenticated

log = logging.getLogger("mtactl.auth")

# Paths anyone may read: liveness and the API description.
PUBLIC_PATHS = ["^/api/v1/health$", "^/api/v1/health/detailed$", "^/schema"]


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        token = _receive.set(receive)  # for close_without_reply: the connection passed on lacks it
        try:
            await super().__call__(scope, receive, send)
        finally:
            _receive.reset(token)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ingest = connection.scope["path"].startswith(INGEST_PATHS)
        if ingest and scheme.lower() == "basic":
            token = basic_password(token)
        elif scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing API key: send 'Authorization: Bearer mq_live_…'", field="Authorization")
        keys: ApiKeyService = connection.app.state.services.keys
        if ingest:
            principal = await _authenticate_patiently(keys, token.strip())
        else:
            principal = await keys.authenticate(token.strip())
        if principal is None:
            raise Unauthenticated("invalid or revoked API key", field="Authorization")
        return AuthenticationResult(user=principal, auth=principal.key_id)


# The ingest routes. There, the key may also come as the password of HTTP Basic (any user name): an MTA plugin
# that can send credentials only in the URL it posts to (ZoneMTA's core/http-bounce, through nodemailer's fetch,
# turns https://user:key@host/… into "Authorization: Basic base64(user:key)" and sends no other header) can then
# authenticate. The credentials are treated as the Bearer token is: checked, never logged or echoed.
#
# An MTA treats any non-2xx as final and drops what it posted. On these paths a key that cannot be checked for
# want of a database (first seen while it is away: neither cached nor remembered) is retried, holding the
# request, for a short while; if the database is still away the connection is then closed without a reply,
# which kumod (and its log hook) count as a network error and retry later. Elsewhere it is a 503 at once.
INGEST_PATHS = "/api/v1/events/ingest/"
HOLD_LIMIT_SECONDS = 10.0


def basic_password(credentials: str) -> str:
    """The password of HTTP Basic credentials (base64 of "user:password", RFC 7617): the API key."""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        decoded = ""
    _, colon, password = decoded.partition(":")
    if not colon or not password.strip():
        raise Unauthenticated(
            "malformed Basic credentials: send the API key as the password (https://any-name:mq_live_…@host/…)",
            field="Authorization",
        )
    return password


async def _authenticate_patiently(keys: ApiKeyService, token: str) -> Principal | None:
    delay, waited = 0.2, 0.0
    while True:
        try:
            return await keys.authenticate(token)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            if waited >= HOLD_LIMIT_SECONDS:
                log.warning("an ingest key could not be checked for %.0f s (database away); closing", waited)
                await close_without_reply()
                raise
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 2.0)


_receive: ContextVar[Receive | None] = ContextVar("mtactl_receive", default=None)


async def close_without_reply() -> None:
    """Close the client's connection before any response is sent (uvicorn: its transport sits behind the receive
    callable). The server then finds the client gone and sends nothing, not even its own 500. Elsewhere (another
    server, the test client) this does nothing and the error's own response (503) goes out."""
    transport = getattr(getattr(_receive.get(), "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "close"):
        return
    transport.close()
    for _ in range(3):  # let the loop deliver connection_lost, which marks the request as disconnected
        await asyncio.sleep(0)


def requires(*scopes: Scope) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard admitting keys that hold any of ``scopes`` (``admin`` holds them all)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            # OPTIONS says which methods a path has, and a CORS preflight carries no credentials: the
            # authentication middleware lets it through without a principal, and there is nothing to guard.
            return
        principal: Principal = connection.user
        if not any(principal.allows(scope) for scope in scopes):
            wanted = " or ".join(repr(s.value) for s in scopes)
            raise Forbidden(f"this API key lacks the {wanted} scope", field="scopes")

    guard.__name__ = "requires_" + "_or_".join(s.name for s in scopes)
    return guard
