"""An HTTP client on the real app (real auth, real database), for the API tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from litestar.testing import AsyncTestClient

from controlplane.app import create_app
from controlplane.db.engine import create_engine, database_unavailable, session_factory
from controlplane.projections import standard_projections
from controlplane.projections.service import ProjectionService
from controlplane.services import Services
from controlplane.settings import Settings


class ReadingClient(AsyncTestClient[Any]):
    """The app's projections (the message mirror, the counters) follow the event log in the background, seconds
    behind an ingest. The test app runs no background jobs; this client brings them up to date before every
    request but an ingest (through an engine of the test's own event loop: the app's runs in another), so that a
    test reads what it wrote, as an operator does a moment later."""

    projections: ProjectionService | None = None

    async def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        if self.projections is not None and not (method == "POST" and "/events/ingest/" in str(url)):
            try:
                await self.projections.catch_up()
            except Exception as exc:  # the database may be away on purpose in this test
                if not database_unavailable(exc):
                    raise
        return await super().request(method, url, **kwargs)


@asynccontextmanager
async def api(settings: Settings, **overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__}, **overrides})
    app = create_app(settings, run_jobs=False)
    engine = create_engine(settings)
    try:
        async with ReadingClient(app) as client:
            client.projections = ProjectionService(session_factory(engine), standard_projections(settings))
            yield client
    finally:
        await engine.dispose()


async def bearer(services: Services, *scopes: str, tenant: str | None = None) -> dict[str, str]:
    created = await services.keys.create(name="-".join(scopes) or "none", scopes=scopes, tenant_id=tenant)
    return {"Authorization": f"Bearer {created.key}"}


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[str]:
    """The app under a real uvicorn server (as ``mtactl serve`` runs it) on a free port of 127.0.0.1: its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, run_jobs=False), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
