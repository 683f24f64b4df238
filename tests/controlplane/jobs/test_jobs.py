"""Periodic jobs run in-process without Redis, and on a saq worker with it."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from sqlalchemy import select

from controlplane.db.tables import JobHeartbeatRow
from controlplane.jobs.runner import InProcessJobs, RedisWorkerJobs, cron_every, job_runner_for, run_worker
from controlplane.services import Services
from tests.conftest import REDIS_URL


async def heartbeat_runner(services: Services) -> str | None:
    async with services.sessions() as session:
        row = await session.scalar(select(JobHeartbeatRow).where(JobHeartbeatRow.name == "heartbeat"))
    return row.runner if row else None


async def wait_for_heartbeat(services: Services, seconds: float = 10) -> str | None:
    for _ in range(int(seconds * 10)):
        if runner := await heartbeat_runner(services):
            return runner
        await asyncio.sleep(0.1)
    return None


async def test_without_redis_jobs_run_in_process(services: Services) -> None:
    runner = job_runner_for(services)
    assert isinstance(runner, InProcessJobs)
    await runner.start()
    try:
        assert await wait_for_heartbeat(services) == "in-process"
    finally:
        await runner.stop()


async def test_with_redis_jobs_run_on_a_saq_worker(services: Services) -> None:
    with_redis = Services(
        **{
            **services.__dict__,
            "settings": msgspec.structs.replace(services.settings, redis_url=REDIS_URL, heartbeat_interval_seconds=1.0),
        }
    )
    assert isinstance(job_runner_for(with_redis), RedisWorkerJobs)
    worker = asyncio.create_task(run_worker(with_redis))
    try:
        assert await wait_for_heartbeat(with_redis, seconds=15) == "saq"
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def test_cron_expressions_step_in_the_largest_unit_that_fits() -> None:
    assert cron_every(5) == "* * * * * */5"
    assert cron_every(0.2) == "* * * * * */1"
    assert cron_every(900) == "*/15 * * * * 0"
    assert cron_every(3600) == "0 */1 * * * 0"  # hourly, not every minute


def test_cron_expressions_fire_at_the_interval_they_were_made_for() -> None:
    from datetime import datetime

    from croniter import croniter

    start = datetime(2026, 11, 23, 10, 0, 0)
    for seconds in (5, 900, 3600, 7200):
        times = croniter(cron_every(seconds), start)
        first, second = times.get_next(datetime), times.get_next(datetime)
        assert (second - first).total_seconds() == seconds
