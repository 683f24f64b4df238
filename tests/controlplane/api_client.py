"""An HTTP client on the real app (real auth, real database), for the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
