"""``GET /metrics``: mtactl's own metrics in Prometheus' text format (prometheus-client), for scraping.

Read fresh on every scrape from the checkpoints and this process's counters, so several service processes each
answer for the shared log and their own ingestion.
"""

from __future__ import annotations

from collections.abc import Iterator

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.auth.guard import requires
from controlplane.auth.schema import Scope
from controlplane.auth.tenancy import FLEET
from controlplane.projections.schema import ProjectionStatus
from controlplane.services import Services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    def __init__(self, projections: list[ProjectionStatus], ingested: dict[str, int], spooled_files: int) -> None:
        self._projections = projections
        self._ingested = ingested
        self._spooled_files = spooled_files

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "mtactl_projection_lag_seconds",
            "How long the oldest event a projection has not applied has waited",
            labels=["projection"],
        )
        behind = GaugeMetricFamily(
            "mtactl_projection_events_behind",
            "Events in the log a projection has not applied (counted to 1e5)",
            labels=["projection"],
        )
        applied = CounterMetricFamily(
            "mtactl_projection_applied_events",
            "Events a projection applied since it was (re)built",
            labels=["projection"],
        )
        for status in self._projections:
            lag.add_metric([status.name], status.lag_seconds)
            behind.add_metric([status.name], status.events_behind)
            applied.add_metric([status.name], status.applied)
        records = CounterMetricFamily(
            "mtactl_ingested_records", "Records this process answered for, by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(self._ingested.items()):
            records.add_metric([outcome], count)
        spool = GaugeMetricFamily("mtactl_spooled_files", "Groups on disk waiting for the database")
        spool.add_metric([], self._spooled_files)
        yield from (lag, behind, applied, records, spool)


class TelemetryController(Controller):
    path = "/metrics"
    tags = ["health"]
    opt = FLEET

    @get(
        "/",
        guards=[requires(Scope.analytics_read)],
        summary="mtactl's own metrics (Prometheus text format): projection lag, ingestion, spool",
        media_type=CONTENT_TYPE,
    )
    async def metrics(self, services: NamedDependency[Services]) -> Response[bytes]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            _Snapshot(
                await services.projections.status(),
                dict(services.ingest.outcomes),
                services.ingest.spooled_files(),
            )
        )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)
