"""HTTP routes for domain health (scope ``analytics:read``): the scores the ``score_domains`` job last wrote."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from controlplane.auth.guard import requires
from controlplane.auth.schema import Scope
from controlplane.auth.tenancy import SCOPED
from controlplane.domains.schema import DomainHealth, DomainPage, DomainSort
from controlplane.services import Services


class DomainsController(Controller):
    path = "/api/v1/domains"
    tags = ["domains"]
    guards = [requires(Scope.analytics_read, Scope.email_read)]
    opt = SCOPED

    @get(
        "/",
        summary="Recipient domains with their health score (worst first by default)",
        description=(
            "Every domain with a delivery attempt in the scoring window (MTACTL_DOMAIN_HEALTH_WINDOW_MINUTES), "
            "fleet-wide, or for one tenant's mail with `tenant_id` (a tenant-bound key: always its own)."
        ),
    )
    async def list_domains(
        self,
        services: NamedDependency[Services],
        tenant_filter: NamedDependency[str | None],
        sort: FromQuery[DomainSort] = DomainSort.score,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        prefix: Annotated[str | None, QueryParameter(min_length=1, max_length=255)] = None,
    ) -> DomainPage:
        return await services.domains.page(
            tenant=tenant_filter, sort=sort, limit=limit, cursor=cursor, domain_prefix=prefix
        )

    @get("/{domain:str}/health", summary="One recipient domain's health score and what it was made from")
    async def domain_health(
        self,
        services: NamedDependency[Services],
        tenant_filter: NamedDependency[str | None],
        domain: FromPath[str],
    ) -> DomainHealth:
        return await services.domains.get(domain, tenant=tenant_filter)
