"""Where periodic jobs run, picked by settings as saq's ``Queue.from_url`` picks a backend by URL.

* no ``MTACTL_REDIS_URL``: ``InProcessJobs`` schedules them inside ``mtactl serve`` with apscheduler;
* with it: ``mtactl worker`` runs them on a saq worker (``run_worker``), and the service only talks to Redis
  to report health.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from redis.asyncio import Redis

from controlplane.jobs.tasks import PERIODIC_JOBS, PeriodicJob, record_run
from controlplane.services import Services

log = logging.getLogger("mtactl.jobs")


class JobRunner(abc.ABC):
    kind: str

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...


def job_runner_for(services: Services) -> JobRunner:
    if services.settings.redis_url:
        return RedisWorkerJobs(services.settings.redis_url)
    return InProcessJobs(services)


class InProcessJobs(JobRunner):
    kind = "in-process"

    def __init__(self, services: Services) -> None:
        self._services = services
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._projections: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The projections follow the event log continuously (woken by every append), not on a schedule.
        self._projections = asyncio.create_task(self._services.projections.run_forever())
        for job in PERIODIC_JOBS:
            self._scheduler.add_job(
                _guarded,
                "interval",
                seconds=job.interval(self._services.settings),
                args=[job, self._services, self.kind],
                id=job.name,
                max_instances=1,  # a slow run is skipped over, never stacked
                coalesce=True,
                next_run_time=datetime.now(UTC),
            )
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._projections is not None:
            self._projections.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._projections


class RedisWorkerJobs(JobRunner):
    """The service side when jobs run on saq workers: nothing to schedule here, only Redis to watch."""

    kind = "saq"

    def __init__(self, redis_url: str) -> None:
        self.redis = Redis.from_url(redis_url)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.redis.aclose()


async def _guarded(job: PeriodicJob, services: Services, runner: str) -> None:
    started = time.perf_counter()
    try:
        await job.run(services, runner)
    except Exception as exc:  # one failing run must not stop the schedule
        log.exception("job %s failed", job.name)
        error: str | None = f"{type(exc).__name__}: {exc}"
    else:
        error = None
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    try:
        await record_run(services, job.name, runner, error=error, duration_ms=elapsed)
    except Exception:
        log.exception("could not record the run of job %s", job.name)


LEASE_PREFIX = "mtactl:job-lease"
RUN_LEASE_SECONDS = 900  # as long as saq lets a job run (its timeout below)


async def leased(redis: Redis, job: PeriodicJob, interval: float, owner: str) -> bool:
    """Whether this worker may run ``job`` now: once per interval slot across every worker, and never beside a run
    still going. saq makes a cron job unique while it is queued, but each worker's scheduler enqueues it again once
    the last run is done, and the start-up run comes on top: without this, two workers ran some slots twice."""
    slot = int(time.time() // interval)
    if not await redis.set(
        f"{LEASE_PREFIX}:{job.name}:slot:{slot}", owner, nx=True, ex=max(1, math.ceil(2 * interval))
    ):
        return False
    return bool(await redis.set(f"{LEASE_PREFIX}:{job.name}:running", owner, nx=True, ex=RUN_LEASE_SECONDS))


async def release(redis: Redis, job: PeriodicJob, owner: str) -> None:
    key = f"{LEASE_PREFIX}:{job.name}:running"
    if (await redis.get(key)) == owner.encode():  # only our own: a lease that ran out may be another's now
        await redis.delete(key)


def cron_every(seconds: float) -> str:
    """A croniter expression firing about every ``seconds`` (seconds field last, as croniter reads six fields).

    Below a minute the step is in seconds, below an hour in minutes, else in hours: a step field cannot exceed
    its unit, so an hourly job written in seconds would have fired every minute.
    """
    if seconds < 60:
        return f"* * * * * */{max(1, math.ceil(seconds))}"
    if seconds < 3600:
        return f"*/{min(59, math.ceil(seconds / 60))} * * * * 0"
    return f"0 */{min(23, math.ceil(seconds / 3600))} * * * 0"


async def run_worker(services: Services, *, burst: bool = False) -> None:
    """``mtactl worker``: run the periodic jobs as saq cron jobs until stopped."""
    from saq import CronJob, Queue, Worker

    settings = services.settings
    if not settings.redis_url:
        raise RuntimeError("MTACTL_REDIS_URL is not set: without Redis, jobs run inside `mtactl serve`")
    queue = Queue.from_url(settings.redis_url, name="mtactl")

    leases = Redis.from_url(settings.redis_url)
    owner = uuid.uuid4().hex

    def saq_task(job: PeriodicJob) -> Any:
        async def task(ctx: dict[str, Any]) -> None:
            if not await leased(leases, job, job.interval(settings), owner):
                return  # another worker runs this slot
            try:
                await _guarded(job, services, "saq")
            finally:
                await release(leases, job, owner)

        task.__name__ = job.name
        task.__qualname__ = job.name
        return task

    async def run_operation(ctx: dict[str, Any], *, operation_id: str) -> None:
        await services.operations.execute(uuid.UUID(operation_id))

    run_operation.__qualname__ = "run_operation"  # saq finds functions by qualified name; enqueued by this name

    tasks = [saq_task(job) for job in PERIODIC_JOBS]
    # saq cancels a job after 10 s unless told otherwise: a slow pass (a burst of new suppression entries to
    # enforce while ingestion loads the cores, a sync of many nodes) was cut off mid-run, every run.
    cron_jobs = [
        CronJob(task, cron=cron_every(job.interval(settings)), timeout=RUN_LEASE_SECONDS)
        for task, job in zip(tasks, PERIODIC_JOBS, strict=True)
    ]
    # A burst worker stops once the queue stays empty for dequeue_timeout seconds (saq requires one with burst).
    worker = Worker(
        queue,
        functions=[*tasks, run_operation],
        cron_jobs=cron_jobs,
        burst=burst,
        dequeue_timeout=1.0 if burst else 0.0,
    )
    # The projections run beside the saq worker in every worker process; one advisory lock per projection keeps
    # exactly one runner at work on each (controlplane.projections.service). A burst worker runs them to the end.
    projections = None if burst else asyncio.create_task(services.projections.run_forever())
    try:
        await queue.connect()
        for job in PERIODIC_JOBS:  # once now, as the in-process runner does, then on their schedule
            await queue.enqueue(job.name, key=f"{job.name}:startup", timeout=RUN_LEASE_SECONDS)
        if burst:
            await services.projections.catch_up()
        await worker.start()
    finally:
        if projections is not None:
            projections.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await projections
        await queue.disconnect()
        await leases.aclose()
        await asyncio.sleep(0)
