"""The periodic jobs. Each takes the service container and does one bounded piece of work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from controlplane.db.partitions import apply_retention, drop_empty_counts, drop_empty_metrics_counts, ensure_partitions
from controlplane.db.tables import JobHeartbeatRow
from controlplane.services import Services
from controlplane.settings import Settings


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    run: Callable[[Services, str], Awaitable[None]]
    interval: Callable[[Settings], float]


async def record_run(
    services: Services, name: str, runner: str, error: str | None = None, duration_ms: float | None = None
) -> None:
    """Upsert the job's heartbeat row. One statement: a select-then-insert raced when two runs of a job started
    at once (a saq worker's start-up run beside its cron run) and failed one of them on the key. The runner
    (``jobs.runner._guarded``) records every run with its duration; a job may record itself too."""
    now = datetime.now(UTC)
    values = {"name": name, "runner": runner, "last_run_at": now, "last_error": error, "last_duration_ms": duration_ms}
    async with services.sessions.begin() as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert(JobHeartbeatRow).values(values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[JobHeartbeatRow.name],
                set_={"runner": runner, "last_run_at": now, "last_error": error, "last_duration_ms": duration_ms},
            )
        )


async def heartbeat(services: Services, runner: str) -> None:
    """Proves the job machinery runs end to end: health reports it stale when beats stop arriving."""
    await record_run(services, "heartbeat", runner)


async def maintain_events(services: Services, runner: str) -> None:
    """Create the coming days' event partitions, drop what is past the retention, and drop the counter rows
    whose messages are all gone (the triggers leave a key's row at zero rather than deleting it)."""
    await ensure_partitions(services.engine)
    await apply_retention(services.engine, services.settings.event_retention_days)
    await drop_empty_counts(services.engine)
    await drop_empty_metrics_counts(services.engine)
    await record_run(services, "maintain_events", runner)


async def probe_nodes(services: Services, runner: str) -> None:
    """Health of every registered node, so GET /api/v1/nodes shows when each was last seen."""
    await services.fleet.probe_all()
    await record_run(services, "probe_nodes", runner)


async def sync_nodes(services: Services, runner: str) -> None:
    """Queue counts, suspensions and bounces of every node, for GET /api/v1/queues and the holds listings."""
    await services.fleet_state.sync()
    await record_run(services, "sync_nodes", runner)


async def enforce_windows(services: Services, runner: str) -> None:
    """Hold the egress sources outside their sending window or past their daily limit, release the others."""
    await services.capacity.enforce()
    await record_run(services, "enforce_windows", runner)


async def score_domains(services: Services, runner: str) -> None:
    """Domain health from the rollups' last window, for GET /api/v1/domains and the queue metrics."""
    await services.domains.score()


async def evaluate_policies(services: Services, runner: str) -> None:
    """The throttling rules: lift what has run its course, then decide on what crosses a threshold now."""
    await services.policies.evaluate()


async def enforce_suppressions(services: Services, runner: str) -> None:
    """Expire suppression entries, enforce new automatic ones, and keep the MTAs' own lists in step."""
    await services.suppressions.run_pass()
    await record_run(services, "enforce_suppressions", runner)


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob(name="heartbeat", run=heartbeat, interval=lambda s: s.heartbeat_interval_seconds),
    PeriodicJob(name="maintain_events", run=maintain_events, interval=lambda s: 3600.0),
    PeriodicJob(name="probe_nodes", run=probe_nodes, interval=lambda s: s.sync_interval_seconds),
    PeriodicJob(name="sync_nodes", run=sync_nodes, interval=lambda s: s.sync_interval_seconds),
    PeriodicJob(name="enforce_windows", run=enforce_windows, interval=lambda s: s.capacity_interval_seconds),
    PeriodicJob(name="score_domains", run=score_domains, interval=lambda s: s.domain_score_interval_seconds),
    PeriodicJob(name="evaluate_policies", run=evaluate_policies, interval=lambda s: s.policy_interval_seconds),
    PeriodicJob(
        name="enforce_suppressions", run=enforce_suppressions, interval=lambda s: s.suppression_interval_seconds
    ),
)
