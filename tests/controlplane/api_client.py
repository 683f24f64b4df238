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
from controlplane.services import Services
from controlplane.settings import Settings


@asynccontextmanager
async def api(settings: Settings, **overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(
        Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__}, **overrides}), run_jobs=False
    )
    async with AsyncTestClient(app) as client:
        yield client


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
