"""The Litestar application, built from a ``Settings``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.router import Router
from litestar.static_files import create_static_files_router
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controlplane.auth.controller import ApiKeysController
from controlplane.auth.guard import PUBLIC_PATHS, ApiKeyAuthentication
from controlplane.auth.tenancy import check_tenancy, provide_tenant, provide_tenant_filter, tenancy_guard
from controlplane.capacity.controller import CapacityController, SourcesController
from controlplane.domains.controller import DomainsController
from controlplane.errors import EXCEPTION_HANDLERS
from controlplane.events.controller import EventsController, MessageEventsController, ingest_router
from controlplane.fleet.controller import BouncesController, NodesController, SuspensionsController
from controlplane.health.controller import HealthController, mtactl_version
from controlplane.instants import TYPE_DECODERS
from controlplane.jobs.runner import JobRunner, job_runner_for
from controlplane.openapi import install_contract
from controlplane.operations.controller import OperationsController
from controlplane.policies.controller import PoliciesController
from controlplane.protocol import check_api_input, cors_config, full_allow_on_options
from controlplane.queues.controller import (
    LegacyMetricsController,
    MessagesController,
    MetricsController,
    QueuesController,
    legacy_items_controller,
)
from controlplane.services import Services
from controlplane.settings import Settings
from controlplane.suppressions.controller import SuppressionsController
from controlplane.telemetry.controller import TelemetryController


def create_app(settings: Settings, *, run_jobs: bool = True) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # A database that is away does not stop the start: the service answers health as degraded, the API 503,
        # ingestion spools, and the schema is migrated as soon as the database answers (Services.gate).
        services = await Services.start(settings, wait_for_database=True)
        runner = job_runner_for(services)
        app.state.services = services
        app.state.jobs_runner = runner
        await services.ingest.start()

        async def interrupted(sessions: async_sessionmaker[AsyncSession] | None = None) -> None:
            if not settings.redis_url:  # operations run in this process only: any left running were cut off
                await services.mark_interrupted_operations(sessions)

        async def when_migrated() -> None:
            await services.migrate_when_available(before_opening=interrupted)
            if run_jobs:
                await runner.start()

        migrating: asyncio.Task[None] | None = None
        if services.gate.ready:
            await interrupted()
            if run_jobs:
                await runner.start()
        else:
            migrating = asyncio.create_task(when_migrated())
        try:
            yield
        finally:
            if migrating is not None:
                migrating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await migrating
            await runner.stop()
            await services.ingest.stop()
            await services.close()

    route_handlers: list[Any] = [
        HealthController,
        schema_assets_router(),
        ApiKeysController,
        QueuesController,
        ingest_router(),
        EventsController,
        MessageEventsController,
        NodesController,
        SuspensionsController,
        BouncesController,
        OperationsController,
        TelemetryController,
        SourcesController,
        CapacityController,
        DomainsController,
        PoliciesController,
        SuppressionsController,
    ]
    if settings.enable_email_queue_model:
        route_handlers += [MessagesController, MetricsController]
    else:
        # The legacy shape is the only one spoken: it takes over the message and metrics routes.
        route_handlers += [legacy_items_controller("/api/v1/messages"), LegacyMetricsController]
    if settings.legacy_api_enabled:
        route_handlers.append(legacy_items_controller("/api/v1/legacy/queue-items"))

    app = Litestar(
        route_handlers=route_handlers,
        guards=[tenancy_guard],
        lifespan=[lifespan],
        dependencies={
            "services": Provide(_services, sync_to_thread=False),
            "jobs_runner": Provide(_jobs_runner, sync_to_thread=False),
            "tenant": Provide(provide_tenant),
            "tenant_filter": Provide(provide_tenant_filter),
        },
        middleware=[DefineMiddleware(ApiKeyAuthentication, exclude=PUBLIC_PATHS)],
        exception_handlers=EXCEPTION_HANDLERS,
        cors_config=cors_config(settings),
        before_send=[full_allow_on_options],
        before_request=check_api_input,
        openapi_config=OpenAPIConfig(
            render_plugins=[OfflineSwaggerRenderPlugin()],
            title="mtactl",
            version=mtactl_version(),
            description="Control plane for fleets of KumoMTA and ZoneMTA nodes.",
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http", scheme="bearer", description="Authorization: Bearer mq_live_…"
                    ),
                    "ingestBasic": SecurityScheme(
                        type="http",
                        scheme="basic",
                        description="Ingest routes only: HTTP Basic with any user name and the API key as the "
                        "password, for MTA plugins that can send credentials only in the URL they post to "
                        "(ZoneMTA's core/http-bounce: https://ingest:mq_live_…@mtactl…/api/v1/events/ingest/zonemta)",
                    ),
                }
            ),
            security=[{"apiKey": []}],
        ),
        logging_config=None,
        debug=False,
        type_decoders=TYPE_DECODERS,
    )
    check_tenancy(app)
    install_contract(app)
    return app


# /schema's page assets come from the swagger-ui-bundle package (Swagger UI 4.15.5, Apache-2.0), not a CDN: an
# operator network without internet access must still get a working page.
SCHEMA_ASSETS = "/schema/assets"


class OfflineSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI at /schema, every asset served by mtactl itself."""

    def __init__(self) -> None:
        super().__init__(
            js_url=f"{SCHEMA_ASSETS}/swagger-ui-bundle.js",
            css_url=f"{SCHEMA_ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{SCHEMA_ASSETS}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{SCHEMA_ASSETS}/favicon-32x32.png'>",
            path=["/", "/swagger"],
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        # Swagger UI would otherwise send the schema to validator.swagger.io for its "valid" badge.
        page = super().render(request, openapi_schema)
        return page.replace(b"dom_id: '#swagger-container',", b"dom_id: '#swagger-container', validatorUrl: null,", 1)


def schema_assets_router() -> Router:
    from swagger_ui_bundle import swagger_ui_path

    return create_static_files_router(
        path=SCHEMA_ASSETS, directories=[Path(str(swagger_ui_path))], include_in_schema=False, name="schema-assets"
    )


def _services(state: State) -> Services:
    services: Services = state.services
    return services


def _jobs_runner(state: State) -> JobRunner:
    runner: JobRunner = state.jobs_runner
    return runner


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # apscheduler logs every run at INFO; only its problems are worth an operator's attention.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def app_from_environment() -> Litestar:
    """The app as ``mtactl serve`` runs it, built from the ``MTACTL_*`` environment: the factory each of several
    uvicorn worker processes calls."""
    from controlplane.collector import settle_collector

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    app = create_app(settings)
    settle_collector()
    return app
