"""GET /api/v1/health (liveness) and /api/v1/health/detailed (database, redis, jobs). No auth, no secrets."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import msgspec
from litestar import Controller, MediaType, Response, get, head
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import select, text

from controlplane.auth.tenancy import PUBLIC
from controlplane.db.engine import schema_is_current
from controlplane.db.tables import JobHeartbeatRow
from controlplane.jobs.runner import JobRunner, RedisWorkerJobs
from controlplane.jobs.tasks import PERIODIC_JOBS
from controlplane.projections.schema import ProjectionStatus
from controlplane.services import Services

STALE_AFTER_INTERVALS = 3


def mtactl_version() -> str:
    try:
        return version("mtactl")
    except PackageNotFoundError:
        return "unknown"


class Health(msgspec.Struct, kw_only=True):
    status: str
    version: str


class ComponentHealth(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: str  # "ok" | "down" | "stale" | "not_configured"
    detail: str | None = None
    latency_ms: float | None = None


class JobHealth(msgspec.Struct, kw_only=True):
    name: str
    runner: str | None
    last_run_at: datetime | None
    last_error: str | None
    status: str
    last_duration_ms: float | None = None  # how long its last run took


class DetailedHealth(msgspec.Struct, kw_only=True):
    status: str  # "ok" or "degraded"
    version: str
    database: ComponentHealth
    redis: ComponentHealth
    jobs_runner: str
    jobs: list[JobHealth]
    spooled_files: int  # ingested groups on disk waiting for the database (replayed when it answers)
    # How far each projection of the event log (the message mirror, the rollups) is behind the log.
    projections: list[ProjectionStatus] = []


class HealthController(Controller):
    path = "/api/v1/health"
    opt = PUBLIC
    tags = ["health"]

    @get("/", summary="Liveness")
    async def health(self) -> Health:
        return Health(status="ok", version=mtactl_version())

    @head("/", summary="Liveness, without a body (for probes that send HEAD)", media_type=MediaType.TEXT)
    async def health_head(self) -> None:
        return None

    @get(
        "/detailed",
        summary="Database, Redis and background jobs",
        responses={503: ResponseSpec(data_container=DetailedHealth, description="Degraded: a component is down")},
    )
    async def detailed(
        self, services: NamedDependency[Services], jobs_runner: NamedDependency[JobRunner]
    ) -> Response[DetailedHealth]:
        return await _detailed(services, jobs_runner)

    @head("/detailed", summary="200 when healthy, 503 when degraded, without a body", media_type=MediaType.TEXT)
    async def detailed_head(
        self, services: NamedDependency[Services], jobs_runner: NamedDependency[JobRunner]
    ) -> Response[None]:
        report = await _detailed(services, jobs_runner)
        return Response(None, status_code=report.status_code, media_type=MediaType.TEXT)


async def _detailed(services: Services, jobs_runner: JobRunner) -> Response[DetailedHealth]:
    database = await _database(services)
    redis = await _redis(jobs_runner)
    jobs = await _jobs(services) if database.status == "ok" else []
    projections = await services.projections.status() if database.status == "ok" else []
    healthy = database.status == "ok" and redis.status in ("ok", "not_configured")
    healthy = healthy and all(j.status == "ok" for j in jobs)
    body = DetailedHealth(
        status="ok" if healthy else "degraded",
        version=mtactl_version(),
        database=database,
        redis=redis,
        jobs_runner=jobs_runner.kind,
        jobs=jobs,
        spooled_files=services.ingest.spooled_files(),
        projections=projections,
    )
    return Response(body, status_code=200 if healthy else 503)


async def _database(services: NamedDependency[Services]) -> ComponentHealth:
    if not services.gate.ready:  # started while the database was away; ingestion is spooling meanwhile
        return ComponentHealth(status="down", detail=services.gate.reason)
    started = time.perf_counter()
    try:
        async with services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        current = await schema_is_current(services.engine)
    except Exception as exc:
        return ComponentHealth(status="down", detail=type(exc).__name__)
    latency = round((time.perf_counter() - started) * 1000, 2)
    backend = services.engine.dialect.name
    if not current:
        return ComponentHealth(status="down", detail=f"{backend}: schema not migrated", latency_ms=latency)
    return ComponentHealth(status="ok", detail=backend, latency_ms=latency)


async def _redis(jobs_runner: NamedDependency[JobRunner]) -> ComponentHealth:
    if not isinstance(jobs_runner, RedisWorkerJobs):
        return ComponentHealth(status="not_configured", detail="jobs run in-process")
    started = time.perf_counter()
    try:
        await jobs_runner.redis.ping()
    except Exception as exc:
        return ComponentHealth(status="down", detail=type(exc).__name__)
    return ComponentHealth(status="ok", latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def _jobs(services: NamedDependency[Services]) -> list[JobHealth]:
    async with services.sessions() as session:
        rows = {r.name: r for r in (await session.scalars(select(JobHeartbeatRow))).all()}
    now = datetime.now(UTC)
    report = []
    for job in PERIODIC_JOBS:
        row = rows.get(job.name)
        limit = STALE_AFTER_INTERVALS * job.interval(services.settings)
        if row is None:
            status = "never_ran"
        elif row.last_error:
            status = "failing"
        elif (now - row.last_run_at).total_seconds() > limit:
            status = "stale"
        else:
            status = "ok"
        report.append(
            JobHealth(
                name=job.name,
                runner=row.runner if row else None,
                last_run_at=row.last_run_at if row else None,
                last_error=row.last_error if row else None,
                status=status,
                last_duration_ms=row.last_duration_ms if row else None,
            )
        )
    return report
