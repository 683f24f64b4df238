"""Engines and sessions for the configured database, and schema migration on start-up."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from controlplane.settings import PREFIX, Settings, SettingsError, async_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(async_database_url(settings.database_url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # One file, one writer at a time: a pool would only add lock contention, so connect per use.
        engine = create_async_engine(url, poolclass=NullPool)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        # asyncpg prepares every statement, and after five runs Postgres may switch to a generic plan that ignores
        # the parameter values. For filter queries that is ruinous ("size_bytes >= $1" is planned as matching a
        # third of the table, so a rare value scans everything); planning each run with its values costs well
        # under a millisecond.
        connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; busy_timeout makes a second writer wait instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB of page cache (the default is 2 MiB): a message row touches ~20 index B-trees, and with the default
    # cache a bulk insert rereads their pages from the OS for every batch (raw executemany: 240 -> 125 µs a row).
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def upgrade_database(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (idempotent; runs on every start)."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def schema_is_current(engine: AsyncEngine) -> bool:
    def check(connection: Connection) -> bool:
        heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
        return set(MigrationContext.configure(connection).get_current_heads()) == heads

    async with engine.connect() as connection:
        return await connection.run_sync(check)


# SQLSTATE classes that say "the database cannot serve now", not "this request is wrong": connection exception,
# insufficient resources (disk full, too many connections), operator intervention (shutdown, and 57P03 "the
# database system is starting up / shutting down" refused at connect time), system error.
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})


class DatabaseNotReady(ConnectionError):
    """The service has not migrated the database's schema yet (see ``SchemaGate``): as good as away."""


class SchemaGate:
    """Keeps an engine off a database whose schema the service has not migrated yet.

    A service started while the database is away (``Services.start(wait_for_database=True)``) closes its engine's
    gate: every new connection is refused with ``DatabaseNotReady`` before it is attempted, which
    ``database_unavailable`` counts as the database being away. So ingestion spools, keys fall back on what was
    verified before and the API answers 503, rather than anything running against missing tables when the
    server comes back. The migration runs on an engine of its own and opens the gate when it is done.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.reason: str | None = None  # why it is closed; None when open

    @property
    def ready(self) -> bool:
        return self.reason is None

    def close(self, reason: str) -> None:
        if self.reason is None:
            event.listen(self._engine.sync_engine, "do_connect", self._refuse)
        self.reason = reason

    def open(self) -> None:
        if self.reason is not None:
            event.remove(self._engine.sync_engine, "do_connect", self._refuse)
        self.reason = None

    def _refuse(self, *_: Any) -> None:
        raise DatabaseNotReady(self.reason or "schema not migrated yet")


def database_unavailable(error: BaseException) -> bool:
    """True for faults in reaching the database, as opposed to faults in what was sent to it.

    SQLAlchemy wraps what the driver raised (``DBAPIError.orig``, an adapted error carrying the SQLSTATE, itself
    caused by asyncpg's exception), most often in the bare ``DBAPIError`` when it fails at connect time: every
    layer of that chain is looked at, so a refusal by a server that is starting or stopping counts as the
    database being away wherever it surfaces.
    """
    seen: set[int] = set()
    layer: BaseException | None = error
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        if _unavailable_layer(layer):
            return True
        orig = layer.orig if isinstance(layer, sa_exc.DBAPIError) else None
        layer = orig if isinstance(orig, BaseException) else layer.__cause__
    return False


def _unavailable_layer(error: BaseException) -> bool:
    sqlstate = getattr(error, "sqlstate", None)  # asyncpg's errors and SQLAlchemy's adaptation of them
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    if isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error):
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    # sa_exc.TimeoutError: no pooled connection came free in time, the database is not keeping up.
    unreachable = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)
    if isinstance(error, unreachable):
        return True
    return isinstance(error, (OSError, ConnectionError, TimeoutError))


def database_reason(exc: BaseException) -> str:
    """What the database said, in one short line (not SQLAlchemy's text, which quotes the statement and its
    parameters)."""
    cause: BaseException = exc
    while True:
        inner = getattr(cause, "orig", None) or cause.__cause__
        if inner is None or inner is cause:
            break
        cause = inner
    text = str(cause).strip()
    return one_line(f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__)


_REASON_WIDTH = 300


def one_line(text: str) -> str:
    """The first line of a reason, NUL written as \\u0000 (Postgres text cannot hold it), at most 300 characters."""
    text = (text.splitlines()[0] if text else text).replace("\x00", "\\u0000")
    return text if len(text) <= _REASON_WIDTH else text[: _REASON_WIDTH - 1] + "…"


def query_cancelled(error: BaseException) -> bool:
    """True when Postgres stopped the statement (SQLSTATE 57014: statement_timeout), at any layer of the error."""
    seen: set[int] = set()
    layer: BaseException | None = error
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        if getattr(layer, "sqlstate", None) == "57014" or getattr(layer, "pgcode", None) == "57014":
            return True
        layer = getattr(layer, "orig", None) or layer.__cause__
    return False


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a Postgres session, for COPY, which SQLAlchemy does not offer.

    asyncpg begins SQLAlchemy's transaction lazily, at its first statement: the caller must have run one in this
    transaction (a SAVEPOINT will do) before using the connection, or what it writes would commit on its own.
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        raise RuntimeError("driver_connection used before the session's transaction began on the server")
    return driver


async def copy_to_stage(
    session: AsyncSession, create: str, name: str, columns: Sequence[str], records: Iterable[Sequence[Any]]
) -> None:
    """COPY ``records`` into ``name``, a session-local staging table (``create``: ``CREATE TEMPORARY TABLE IF NOT
    EXISTS … ON COMMIT DELETE ROWS``), for one ``INSERT … SELECT`` from it: COPY's encoding costs the client a
    fraction of what one array parameter per column does. Postgres only."""
    await session.execute(text(create))  # also begins the transaction on the server, as COPY needs
    connection = await driver_connection(session)
    await connection.copy_records_to_table(name, records=records, columns=columns)


async def empty_stage(session: AsyncSession, name: str) -> None:
    """Empty a staging table after its merge: it is emptied by itself only at commit, and the transaction may stage
    and merge again (a rebuild's next batch), which would merge a row left there twice. DELETE, not TRUNCATE: a
    truncate gives the table a new file, and so a catalog update, every pass."""
    await session.execute(text(f"DELETE FROM {name}"))


def connection_problem(error: BaseException, settings: Settings) -> SettingsError | None:
    """A failure to reach the configured database at start-up, as one line naming the setting (None for anything
    else): an operator who mistyped the URL needs that line, not the driver's traceback."""
    url = make_url(async_database_url(settings.database_url))
    where = f"{url.host or 'localhost'}:{url.port or 5432}" if url.get_backend_name() == "postgresql" else ""
    problem: str | None = None
    cause: BaseException | None = error
    while cause is not None and problem is None:
        if isinstance(cause, asyncpg.InvalidCatalogNameError):
            problem = f"database {url.database!r} does not exist on {where} (create it: createdb {url.database})"
        elif isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
            problem = f"{where} refused the login: {cause}"
        elif isinstance(cause, ConnectionRefusedError):
            problem = f"nothing answers on {where} (connection refused): is PostgreSQL running there?"
        elif isinstance(cause, TimeoutError):
            problem = f"{where} did not answer in time"
        elif isinstance(cause, OSError) and where:
            problem = f"cannot reach {where}: {cause.strerror or cause}"
        elif isinstance(cause, sa_exc.OperationalError) and url.get_backend_name() == "sqlite":
            problem = f"cannot open the SQLite file {url.database!r}: {cause.orig}"
        elif isinstance(cause, OSError) and url.get_backend_name() == "sqlite":
            problem = f"cannot create the SQLite file {url.database!r}: {cause.strerror or cause}"
        cause = cause.__cause__ or cause.__context__
    return SettingsError(f"{PREFIX}DATABASE_URL: {problem}") if problem else None
