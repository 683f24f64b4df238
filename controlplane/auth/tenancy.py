"""Tenant confinement, in one place.

Every route declares in its ``opt`` how tenants reach it (``TENANCY``):

- ``"scoped"``: tenant data. The handler takes the ``tenant`` dependency (the tenant a tenant-bound key is bound
  to; ``None`` for an unbound key) or ``tenant_filter`` (the same, or for an unbound key the ``tenant_id`` it asked
  for), and hands it to the service, which confines every read and every target to it.
- ``"fleet"``: shared infrastructure (nodes, API keys, dead letters, the node sync). A tenant-bound key is refused
  here, whatever its scopes: what it could do would reach every tenant.
- ``"public"``: no key at all (health, the API description).

``check_tenancy`` refuses to build an app with a route that declares none, so a new endpoint cannot forget.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Litestar, Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import QueryParameter

from controlplane.auth.schema import Principal
from controlplane.errors import Forbidden

TENANCY = "tenancy"
Tenancy = Literal["scoped", "fleet", "public"]
SCOPED: dict[str, Any] = {TENANCY: "scoped"}
FLEET: dict[str, Any] = {TENANCY: "fleet"}
PUBLIC: dict[str, Any] = {TENANCY: "public"}


def _principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    user = connection.scope.get("user")
    return user if isinstance(user, Principal) else None


def tenancy_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """App-wide guard: a tenant-bound key never reaches a fleet-wide route."""
    principal = _principal(connection)
    if principal is not None and principal.tenant_id is not None and handler.opt.get(TENANCY) == "fleet":
        raise Forbidden("a tenant-bound API key cannot use fleet-wide routes", field="Authorization")


async def provide_tenant(request: Request[Any, Any, Any]) -> str | None:
    """The tenant the caller is bound to (``None``: an unbound key, which sees every tenant)."""
    principal = _principal(request)
    return principal.tenant_id if principal is not None else None


async def provide_tenant_filter(
    request: Request[Any, Any, Any],
    tenant_id: Annotated[
        str | None,
        QueryParameter(min_length=1, max_length=100, description="Only this tenant (a tenant-bound key: its own)"),
    ] = None,
) -> str | None:
    """The tenant a query is confined to: a tenant-bound key's own (asking for another is refused), or for an
    unbound key the one it asked for, if any."""
    bound = await provide_tenant(request)
    if bound is None:
        return tenant_id
    if tenant_id is not None and tenant_id != bound:
        raise Forbidden("this API key is bound to another tenant", field="tenant_id")
    return bound


def check_tenancy(app: Litestar) -> None:
    """Refuse an app with a route that does not say how tenants reach it (see the module's docstring)."""
    undeclared = sorted(
        f"{method} {route.path}"
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        for method in getattr(handler, "http_methods", ())
        if method != "OPTIONS"
        and not route.path.startswith("/schema")
        and handler.opt.get(TENANCY)
        not in (
            "scoped",
            "fleet",
            "public",
        )
    )
    if undeclared:
        raise RuntimeError(f"routes without a tenancy in opt (scoped, fleet or public): {', '.join(undeclared)}")
