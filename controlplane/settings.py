"""The one settings object, read from ``MTACTL_*`` environment variables and passed to whatever needs it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from adapters.http import NodeNetworks

PREFIX = "MTACTL_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./mtactl.db"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    database_url: str = DEFAULT_DATABASE_URL
    # Without Redis, background jobs run in-process (apscheduler); with it, on saq workers (`mtactl worker`).
    redis_url: str | None = None
    enable_legacy_queue_adapter: bool = False
    enable_email_queue_model: bool = True
    # Connection pool size for Postgres (ignored for SQLite).
    database_pool_size: int = 10
    # How often the in-process / worker heartbeat job runs; health reports the jobs stale after 3 missed beats.
    heartbeat_interval_seconds: float = 5.0
    log_level: str = "INFO"
    # 32 bytes, base64: the AES-GCM key MTA credentials are encrypted under. Without it, nodes can be registered
    # only without credentials (mtactl never stores a secret in the clear).
    secret_key: str | None = None
    # How often each node's health, queue counts, suspensions and bounces are read.
    sync_interval_seconds: float = 15.0
    # How long POST /api/v1/operations waits for an operation to finish before answering 202 (it keeps running).
    operation_wait_seconds: float = 10.0
    # Event ingestion: records older than this are dropped (whole daily partitions on Postgres).
    event_retention_days: int = 30
    # Where accepted records wait, on local disk, while the database is unreachable (replayed when it is back).
    spool_dir: str = "./mtactl-spool"
    # Upper bound on records written in one group commit.
    ingest_max_batch: int = 10_000
    # Concurrent group-commit writers (each holds one database connection while writing).
    ingest_writers: int = 2
    # Records one ingest request may carry (more: 413); keep KumoMTA's hook batch_size at or below it.
    ingest_max_records_per_request: int = 10_000
    # Rejected records of one request kept whole as dead letters; beyond it one dead letter counts the rest.
    ingest_max_dead_letters_per_request: int = 1000
    # Where node URLs may point: comma-separated networks (CIDRs) and host names (".corp" for every name under it);
    # unset or "any": anywhere. Checked at registration and on the resolved address of every connection.
    node_networks: str | None = None
    # Browser origins allowed to call the API (CORS), comma-separated in the environment; "*" allows any.
    # Empty (the default): no CORS headers, and browsers refuse cross-origin calls.
    cors_origins: tuple[str, ...] = ()
    # Longest a message listing may run on Postgres before it is stopped and answered 400 query_too_broad (with
    # what to narrow), so one broad query cannot tie up the database.
    # 900: a stopped listing answers within 1 s, the request around the query included (at 10M rows a budget of
    # 1000 ms answered its 400s in 1,007 to 1,051 ms, bench/list_messages.py)
    listing_timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 900
    # How often sending windows and daily limits are enforced (sources held and released at the MTAs).
    capacity_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # A queued message's maximum age when the mirror has no expires_at for it (KumoMTA's default max_age: 7 days),
    # for the warning that held messages would expire.
    message_max_age_seconds: Annotated[float, msgspec.Meta(gt=0)] = 7 * 86400.0
    # How often the throttling rules are evaluated against the rollups (controlplane.policies).
    policy_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # How often domain health is scored, and over how many minutes of the rollups (controlplane.domains).
    domain_score_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    domain_health_window_minutes: Annotated[int, msgspec.Meta(ge=1, le=10_080)] = 60
    # Suppressions: how long an automatic soft-bounce entry lasts, and how many soft bounces of one address within
    # the window make one; how often expiry, enforcement at the MTAs and the ZoneMTA lists' reconciliation run.
    soft_bounce_suppress_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 7.0
    soft_bounce_threshold: Annotated[int, msgspec.Meta(ge=1)] = 3
    soft_bounce_window_hours: Annotated[float, msgspec.Meta(gt=0, le=8760)] = 72.0
    suppression_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0

    def __post_init__(self) -> None:
        try:
            NodeNetworks.parse(self.node_networks)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}NODE_NETWORKS: {exc}") from None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def legacy_api_enabled(self) -> bool:
        # With the new model switched off the legacy shape is the only one the API speaks, so it must be served.
        return self.enable_legacy_queue_adapter or not self.enable_email_queue_model

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for field in cls.__struct_fields__:
            name = PREFIX + field.upper()
            if name in env and env[name] != "":
                raw[field] = env[name]
                if field in _LIST_FIELDS:
                    raw[field] = [item.strip() for item in env[name].split(",") if item.strip()]
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            # strict=False turns "true"/"1"/"5" from the environment into bools and numbers.
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(_name_env_var(str(exc))) from exc
        problem = database_url_problem(settings.database_url)
        if problem:
            raise SettingsError(f"{PREFIX}DATABASE_URL: {problem}")
        return settings


# The databases mtactl runs on, by URL scheme, and the async driver each needs. A scheme without a driver
# ("postgresql://", "sqlite:///") gets that driver: it is the only one installed.
DATABASE_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_EXAMPLES = "sqlite+aiosqlite:///path/to/mtactl.db or postgresql+asyncpg://user@host/database"


def database_url_problem(url: str) -> str | None:
    """What is wrong with a database URL, in words (None when it names a supported database and driver)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return f"not a database URL; expected {_EXAMPLES}"
    backend, _, driver = scheme.partition("+")
    backend = "postgresql" if backend == "postgres" else backend
    if backend not in DATABASE_DRIVERS:
        return f"{backend} databases are not supported; use SQLite or PostgreSQL ({_EXAMPLES})"
    if driver and driver != DATABASE_DRIVERS[backend]:
        return f"driver {driver} is not installed; use {backend}+{DATABASE_DRIVERS[backend]}://"
    if backend == "sqlite" and not rest.startswith("/"):
        return f"a SQLite URL has three slashes before a relative path (sqlite+aiosqlite:///./mtactl.db); {_EXAMPLES}"
    return None


def async_database_url(url: str) -> str:
    """``url`` with the async driver mtactl uses for its scheme (``postgresql://`` -> ``postgresql+asyncpg://``)."""
    scheme, sep, rest = url.partition("://")
    backend = "postgresql" if scheme.partition("+")[0] == "postgres" else scheme.partition("+")[0]
    if not sep or "+" in scheme or backend not in DATABASE_DRIVERS:
        return url
    return f"{backend}+{DATABASE_DRIVERS[backend]}://{rest}"


_LIST_FIELDS = frozenset({"cors_origins"})


def _name_env_var(message: str) -> str:
    # msgspec says "... - at `$.redis_url`"; operators set MTACTL_REDIS_URL, so name that instead.
    head, sep, path = message.rpartition(" - at `$.")
    if not sep:
        return message
    return f"{PREFIX}{path.rstrip('`').upper()}: {head}"
