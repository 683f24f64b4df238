"""HTTP routes for messages, queues and metrics. Thin: parse, confine to the caller's tenant, call the service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from adapters.legacy import LegacyQueueMetrics, QueueItem, adapt_message_to_legacy, adapt_metrics_to_legacy
from adapters.model import MessageQueueItem, QueueFilter, QueueMetrics
from controlplane.auth.guard import requires
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.tenancy import SCOPED
from controlplane.queues.params import provide_queue_filter
from controlplane.queues.schema import QUEUE_PAGE_DEFAULT, QUEUE_PAGE_MAX, LegacyQueueItemPage, MessagePage, QueueList
from controlplane.services import Services

AnyRequest = Request[Principal, Any, Any]


class MessagesController(Controller):
    path = "/api/v1/messages"
    tags = ["messages"]
    guards = [requires(Scope.email_read)]
    opt = SCOPED
    dependencies = {"queue_filter": Provide(provide_queue_filter)}

    @get("/", summary="List messages", description="Every QueueFilter field is a query parameter.")
    async def list_messages(
        self,
        services: NamedDependency[Services],
        queue_filter: NamedDependency[QueueFilter],
        cursor: FromQuery[str | None] = None,
    ) -> MessagePage:
        return await services.queues.list_messages(queue_filter, cursor=cursor)

    @get("/{message_id:str}", summary="One message")
    async def get_message(
        self, services: NamedDependency[Services], tenant: NamedDependency[str | None], message_id: FromPath[uuid.UUID]
    ) -> MessageQueueItem:
        return await services.queues.get_message(message_id, tenant_id=tenant)


def legacy_items_controller(route: str) -> type[Controller]:
    """The legacy ``QueueItem`` view of the same data, mounted at ``route``."""

    class LegacyQueueItemsController(Controller):
        path = route
        tags = ["legacy"]
        guards = [requires(Scope.email_read)]
        opt = SCOPED
        dependencies = {"queue_filter": Provide(provide_queue_filter)}

        @get("/", summary="List messages in the legacy QueueItem shape")
        async def list_items(
            self,
            services: NamedDependency[Services],
            queue_filter: NamedDependency[QueueFilter],
            cursor: FromQuery[str | None] = None,
        ) -> LegacyQueueItemPage:
            page = await services.queues.list_messages(queue_filter, cursor=cursor)
            now = datetime.now(UTC)
            return LegacyQueueItemPage(
                data=[adapt_message_to_legacy(m, now=now) for m in page.data],
                cursor=page.cursor,
                has_more=page.has_more,
            )

        @get("/{message_id:str}", summary="One message in the legacy QueueItem shape")
        async def get_item(
            self,
            services: NamedDependency[Services],
            tenant: NamedDependency[str | None],
            message_id: FromPath[uuid.UUID],
        ) -> QueueItem:
            message = await services.queues.get_message(message_id, tenant_id=tenant)
            return adapt_message_to_legacy(message, now=datetime.now(UTC))

    LegacyQueueItemsController.__name__ = f"LegacyQueueItemsController_{route.strip('/').replace('/', '_')}"
    return LegacyQueueItemsController


class QueuesController(Controller):
    path = "/api/v1/queues"
    tags = ["queues"]
    guards = [requires(Scope.email_read, Scope.queue_manage)]
    opt = SCOPED

    @get(
        "/",
        summary="One row per queue with its state and message counts by status, a page at a time",
        description="Queues by queue_name (code point order). Pass the response's cursor back for the next page "
        "(null on the last). ready_queues come with the first page only. With tenant_id (a tenant-bound key: its "
        "own), the queues as that tenant's key sees them: its own, and no ready queues.",
    )
    async def list_queues(
        self,
        services: NamedDependency[Services],
        tenant_filter: NamedDependency[str | None],
        limit: Annotated[
            int,
            QueryParameter(
                ge=1, le=QUEUE_PAGE_MAX, description=f"Page size (default {QUEUE_PAGE_DEFAULT}, max {QUEUE_PAGE_MAX})"
            ),
        ] = QUEUE_PAGE_DEFAULT,
        cursor: Annotated[
            str | None, QueryParameter(description="The cursor of the previous page (opaque, issued by this API)")
        ] = None,
    ) -> QueueList:
        return await services.queues.list_queues(tenant_id=tenant_filter, limit=limit, cursor=cursor)


class MetricsController(Controller):
    path = "/api/v1/metrics"
    tags = ["metrics"]
    guards = [requires(Scope.analytics_read, Scope.email_read)]
    opt = SCOPED

    @get("/queues", summary="QueueMetrics over the mirrored queue")
    async def queue_metrics(
        self,
        services: NamedDependency[Services],
        tenant_filter: NamedDependency[str | None],
        campaign_id: FromQuery[str | None] = None,
        domain: FromQuery[str | None] = None,
    ) -> QueueMetrics:
        return await services.queues.metrics(tenant_id=tenant_filter, campaign_id=campaign_id, domain=domain)


class LegacyMetricsController(Controller):
    """Served at /api/v1/metrics when the new model is switched off (seed 000 table 3.3)."""

    path = "/api/v1/metrics"
    tags = ["legacy"]
    guards = [requires(Scope.analytics_read, Scope.email_read)]
    opt = SCOPED

    @get("/queues", summary="Queue metrics in the legacy shape")
    async def queue_metrics(
        self, services: NamedDependency[Services], tenant_filter: NamedDependency[str | None]
    ) -> LegacyQueueMetrics:
        metrics = await services.queues.metrics(tenant_id=tenant_filter)
        return adapt_metrics_to_legacy(metrics)
