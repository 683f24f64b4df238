"""Databases for the tests: a throwaway SQLite file and a throwaway database on the local PostgreSQL server.

Tests that touch storage take the ``services`` fixture, which runs them once per backend.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import delete

from controlplane.db.tables import (
    ApiKeyRow,
    AuditRow,
    DeadLetterRow,
    DomainScoreRow,
    EventRollupRow,
    EventRow,
    JobHeartbeatRow,
    MessageCountRow,
    MessageRow,
    MetricsCountRow,
    MetricsDepthRow,
    NodeHoldRow,
    NodeQueuesRow,
    NodeRow,
    OperationRow,
    PolicyDecisionRow,
    PolicyMatchRow,
    PolicyRow,
    ProjectionCheckpointRow,
    SoftBounceRow,
    SourceHoldRow,
    SourceRow,
    SuppressionPushRow,
    SuppressionRow,
)
from controlplane.services import Services
from controlplane.settings import Settings

POSTGRES_DSN = os.environ.get("MTACTL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("MTACTL_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _run_aside(coro: Coroutine[Any, Any, None]) -> None:
    # Session fixtures are set up from inside the running test loop; admin statements get a loop of their own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _admin(statement: str) -> None:
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped at the end of the session."""
    name = f"mtactl_test_{uuid.uuid4().hex[:12]}"
    _run_aside(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    _run_aside(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("db") / "mtactl.db"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def backend_services(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    spool = tmp_path_factory.mktemp(f"spool-{request.param}")
    services = await Services.start(Settings(database_url=url, spool_dir=str(spool)))
    yield services
    await services.close()


@pytest.fixture
async def services(backend_services: Services) -> AsyncIterator[Services]:
    """Services on an empty database (each backend in turn)."""
    await _empty(backend_services)
    yield backend_services


async def _empty(services: Services) -> None:
    async with services.sessions.begin() as session:
        for table in (
            MessageRow,
            ApiKeyRow,
            AuditRow,
            JobHeartbeatRow,
            EventRow,
            DeadLetterRow,
            NodeRow,
            OperationRow,
            NodeQueuesRow,
            NodeHoldRow,
            EventRollupRow,
            SourceRow,
            SourceHoldRow,
            ProjectionCheckpointRow,
            SuppressionRow,
            SuppressionPushRow,
            SoftBounceRow,
            MessageCountRow,  # after the messages: their trigger leaves rows of zero behind
            MetricsCountRow,  # likewise
            MetricsDepthRow,
            DomainScoreRow,
            PolicyRow,
            PolicyDecisionRow,
            PolicyMatchRow,
        ):
            await session.execute(delete(table))
    services.keys._cache.clear()


@pytest.fixture
def settings(services: Services) -> Settings:
    return services.settings
