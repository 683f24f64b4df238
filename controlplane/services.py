"""Wiring: builds every service from the settings once, at start-up, and hands them to the app and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.http import NodeNetworks
from controlplane.audit.service import AuditLog
from controlplane.auth.service import ApiKeyService
from controlplane.db.engine import connection_problem, create_engine, session_factory, upgrade_database
from controlplane.db.partitions import ensure_partitions
from controlplane.events.service import EventQueryService, IngestPipeline
from controlplane.fleet.secrets import SecretBox
from controlplane.fleet.service import FleetService
from controlplane.fleet.state import FleetStateService
from controlplane.operations.service import OperationService
from controlplane.queues.service import QueueQueryService
from controlplane.settings import Settings


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

    @classmethod
    async def start(cls, settings: Settings, *, migrate: bool = True) -> Services:
        try:
            engine = create_engine(settings)
        except OSError as exc:  # the SQLite file's directory cannot be made
            raise connection_problem(exc, settings) or exc from exc
        if migrate:
            try:
                await upgrade_database(engine)
            except Exception as exc:
                await engine.dispose()
                raise connection_problem(exc, settings) or exc from exc
            await ensure_partitions(engine)
        sessions = session_factory(engine)
        audit = AuditLog(sessions)
        box = SecretBox(settings.secret_key) if settings.secret_key else None
        fleet = FleetService(sessions, audit, box, NodeNetworks.parse(settings.node_networks))
        queues = QueueQueryService(sessions)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            audit=audit,
            keys=ApiKeyService(sessions, audit),
            queues=queues,
            events=EventQueryService(sessions),
            ingest=IngestPipeline(
                sessions,
                Path(settings.spool_dir),
                settings.ingest_max_batch,
                # SQLite has one writer at a time; concurrent write transactions would only fail with SQLITE_BUSY.
                1 if settings.is_sqlite else settings.ingest_writers,
            ),
            fleet=fleet,
            fleet_state=FleetStateService(sessions, audit, fleet),
            operations=OperationService(sessions, audit, fleet, queues, redis_url=settings.redis_url),
        )

    async def close(self) -> None:
        await self.operations.close()
        await self.fleet.close()
        await self.engine.dispose()
