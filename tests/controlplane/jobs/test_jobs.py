"""Periodic jobs run in-process without Redis, and on a saq worker with it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from typing import Any

import msgspec
import pytest
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


async def test_two_saq_workers_run_each_slot_of_a_periodic_job_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio import Redis

    from controlplane.jobs import runner as runner_module
    from controlplane.jobs.tasks import PeriodicJob

    runs: list[float] = []

    async def counted(_: Services, __: str) -> None:
        runs.append(time.time())
        await asyncio.sleep(0.05)

    job = PeriodicJob(name=f"counted_{uuid.uuid4().hex[:8]}", run=counted, interval=lambda s: 1.0)
    monkeypatch.setattr(runner_module, "PERIODIC_JOBS", (job,))
    with_redis = Services(
        **{**services.__dict__, "settings": msgspec.structs.replace(services.settings, redis_url=REDIS_URL)}
    )
    workers = [asyncio.create_task(run_worker(with_redis)) for _ in range(2)]
    try:
        await asyncio.sleep(4.5)
    finally:
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        redis = Redis.from_url(REDIS_URL)
        await redis.delete(*[k async for k in redis.scan_iter(f"{runner_module.LEASE_PREFIX}:{job.name}:*")] or ["-"])
        await redis.aclose()
    slots = [int(at // 1.0) for at in runs]
    assert len(runs) >= 3 and len(slots) == len(set(slots)), runs  # both workers scheduled it; one ran each slot
    async with services.sessions() as session:
        row = await session.scalar(select(JobHeartbeatRow).where(JobHeartbeatRow.name == job.name))
    assert row is not None and row.runner == "saq" and row.last_duration_ms is not None and row.last_duration_ms >= 50


async def test_detailed_health_shows_each_jobs_last_run_and_its_duration(services: Services) -> None:
    from controlplane.jobs.runner import _guarded
    from controlplane.jobs.tasks import PERIODIC_JOBS

    async def failing(_: Services, __: str) -> None:
        raise RuntimeError("the rollups are away")

    for job in PERIODIC_JOBS:
        if job.name == "evaluate_policies":
            await _guarded(dataclasses.replace(job, run=failing), services, "in-process")
        else:
            await _guarded(job, services, "in-process")
    from tests.controlplane.api_client import api

    async with api(services.settings) as client:
        jobs = {j["name"]: j for j in (await client.get("/api/v1/health/detailed")).json()["jobs"]}
    assert {"score_domains", "evaluate_policies"} <= set(jobs)
    assert jobs["score_domains"]["status"] == "ok" and jobs["score_domains"]["last_duration_ms"] >= 0
    failed = jobs["evaluate_policies"]
    assert failed["status"] == "failing" and failed["last_error"] == "RuntimeError: the rollups are away"
    assert failed["last_duration_ms"] is not None


async def test_a_periodic_job_on_saq_may_run_as_long_as_its_lease_not_saqs_ten_second_default(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    import saq

    from controlplane.jobs.runner import RUN_LEASE_SECONDS

    class Built(Exception):
        pass

    scheduled: list[Any] = []

    def worker(queue: Any, *, cron_jobs: list[Any], **_: Any) -> None:
        scheduled.extend(cron_jobs)
        raise Built

    monkeypatch.setattr(saq, "Worker", worker)
    with_redis = Services(
        **{**services.__dict__, "settings": msgspec.structs.replace(services.settings, redis_url=REDIS_URL)}
    )
    with pytest.raises(Built):
        await run_worker(with_redis)
    assert scheduled and all(job.timeout == RUN_LEASE_SECONDS for job in scheduled)
