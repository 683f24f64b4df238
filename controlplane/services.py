"""Wiring: builds every service from the settings once, at start-up, and hands them to the app and the CLI."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.http import NodeNetworks
from controlplane.audit.service import AuditLog
from controlplane.auth.service import ApiKeyService, VerifiedKeys
from controlplane.capacity.service import CapacityService
from controlplane.db.engine import (
    SchemaGate,
    connection_problem,
    create_engine,
    database_unavailable,
    session_factory,
    upgrade_database,
)
from controlplane.db.partitions import ensure_partitions
from controlplane.domains.service import DomainHealthService
from controlplane.events.service import EventQueryService, IngestPipeline
from controlplane.fleet.secrets import SecretBox
from controlplane.fleet.service import FleetService
from controlplane.fleet.state import FleetStateService
from controlplane.operations.service import OperationService
from controlplane.policies.service import PolicyService
from controlplane.projections import standard_projections
from controlplane.projections.service import ProjectionService
from controlplane.queues.service import QueueQueryService
from controlplane.settings import Settings
from controlplane.suppressions.service import SuppressionService

log = logging.getLogger("mtactl")
MIGRATION_RETRY_SECONDS = (0.25, 0.5, 1.0)  # a refused connect costs nothing: notice the return soon
MIGRATION_FAILED_RETRY_SECONDS = 30.0


async def prepare_schema(engine: AsyncEngine) -> None:
    await upgrade_database(engine)
    await ensure_partitions(engine)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    audit: AuditLog
    keys: ApiKeyService
    queues: QueueQueryService
    events: EventQueryService
    ingest: IngestPipeline
    fleet: FleetService
    fleet_state: FleetStateService
    operations: OperationService
    gate: SchemaGate
    projections: ProjectionService
    capacity: CapacityService
    domains: DomainHealthService
    policies: PolicyService
    suppressions: SuppressionService

    @classmethod
    async def start(cls, settings: Settings, *, migrate: bool = True, wait_for_database: bool = False) -> Services:
        """Build the services, migrating first. With ``wait_for_database`` (the HTTP service), a database that
        cannot be reached does not stop the start: the services come up with the gate closed, and
        ``migrate_when_available`` migrates and opens it once the database answers."""
        try:
            engine = create_engine(settings)
        except OSError as exc:  # the SQLite file's directory cannot be made
            raise connection_problem(exc, settings) or exc from exc
        gate = SchemaGate(engine)
        if migrate:
            try:
                await prepare_schema(engine)
            except Exception as exc:
                if not (wait_for_database and database_unavailable(exc)):
                    await engine.dispose()
                    # A wrong URL (no such database, refused login, unknown host) is one line naming the variable.
                    raise connection_problem(exc, settings) or exc from exc
                log.warning("database unavailable at start (%s): serving degraded until it answers", exc)
                gate.close(f"schema not migrated yet: waiting for the database ({type(exc).__name__})")
                await engine.dispose()  # nothing pooled may slip past the gate
        sessions = session_factory(engine)
        audit = AuditLog(sessions)
        box = SecretBox(settings.secret_key) if settings.secret_key else None
        fleet = FleetService(sessions, audit, box, NodeNetworks.parse(settings.node_networks))
        queues = QueueQueryService(sessions, listing_timeout_ms=settings.listing_timeout_ms)
        projections = ProjectionService(sessions, standard_projections(settings))
        ingest = IngestPipeline(
            sessions,
            Path(settings.spool_dir),
            settings.ingest_max_batch,
            # SQLite has one writer at a time; concurrent write transactions would only fail with SQLITE_BUSY.
            1 if settings.is_sqlite else settings.ingest_writers,
        )
        ingest.on_append.append(projections.wake)
        operations = OperationService(sessions, audit, fleet, queues, redis_url=settings.redis_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            audit=audit,
            keys=ApiKeyService(sessions, audit, VerifiedKeys(Path(settings.spool_dir) / "verified-keys.json")),
            queues=queues,
            events=EventQueryService(sessions),
            ingest=ingest,
            fleet=fleet,
            fleet_state=FleetStateService(sessions, audit, fleet),
            operations=operations,
            gate=gate,
            projections=projections,
            capacity=CapacityService(
                sessions, audit, fleet, max_message_age=timedelta(seconds=settings.message_max_age_seconds)
            ),
            domains=DomainHealthService(sessions, window_minutes=settings.domain_health_window_minutes),
            policies=PolicyService(sessions, audit, operations),
            suppressions=SuppressionService(sessions, audit, fleet, operations, settings),
        )

    async def migrate_when_available(
        self, before_opening: Callable[[async_sessionmaker[AsyncSession]], Awaitable[None]] | None = None
    ) -> None:
        """Retry the migration until it succeeds, then run ``before_opening`` (on the migration's own engine, while
        nothing else can reach the database) and open the gate."""
        for attempt in itertools.count():
            engine = create_engine(self.settings)  # the gate holds the service's own engine off
            try:
                await prepare_schema(engine)
                if before_opening is not None:
                    await before_opening(session_factory(engine))
            except Exception as exc:
                if database_unavailable(exc):
                    self.gate.close(f"schema not migrated yet: waiting for the database ({type(exc).__name__})")
                    pause = MIGRATION_RETRY_SECONDS[min(attempt, len(MIGRATION_RETRY_SECONDS) - 1)]
                else:  # the database answers but refuses the migration: an operator must look; keep trying
                    log.exception("migration failed; retrying in %.0f s", MIGRATION_FAILED_RETRY_SECONDS)
                    self.gate.close(f"schema not migrated yet: migration failed ({type(exc).__name__})")
                    pause = MIGRATION_FAILED_RETRY_SECONDS
            else:
                log.info("database available: schema migrated, serving normally")
                self.gate.open()
                return
            finally:
                await engine.dispose()
            await asyncio.sleep(pause)

    async def mark_interrupted_operations(self, sessions: async_sessionmaker[AsyncSession] | None = None) -> int:
        """Operations a stopped process left ``running`` (in-process runner only), through ``sessions`` if given."""
        if sessions is None:
            return await self.operations.mark_interrupted()
        return await OperationService(sessions, AuditLog(sessions), self.fleet, self.queues).mark_interrupted()

    async def close(self) -> None:
        await self.operations.close()
        await self.fleet.close()
        await self.engine.dispose()
