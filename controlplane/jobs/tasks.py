"""The periodic jobs. Each takes the service container and does one bounded piece of work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from controlplane.db.tables import JobHeartbeatRow
from controlplane.services import Services
from controlplane.settings import Settings


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    run: Callable[[Services, str], Awaitable[None]]
    interval: Callable[[Settings], float]


async def record_run(services: Services, name: str, runner: str, error: str | None = None) -> None:
    """Upsert the job's heartbeat row (portable: select then insert/update inside one transaction)."""
    now = datetime.now(UTC)
    async with services.sessions.begin() as session:
        row = await session.scalar(select(JobHeartbeatRow).where(JobHeartbeatRow.name == name).with_for_update())
        if row is None:
            session.add(JobHeartbeatRow(name=name, runner=runner, last_run_at=now, last_error=error))
        else:
            row.runner, row.last_run_at, row.last_error = runner, now, error


async def heartbeat(services: Services, runner: str) -> None:
    """Proves the job machinery runs end to end: health reports it stale when beats stop arriving."""
    await record_run(services, "heartbeat", runner)


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob(name="heartbeat", run=heartbeat, interval=lambda s: s.heartbeat_interval_seconds),
)
