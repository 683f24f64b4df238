"""Which database faults mean "the database is away" (spool and retry) rather than "this write is wrong"."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from controlplane.db.engine import create_engine, database_unavailable
from controlplane.settings import Settings
from tests.pg_faults import RefusingPostgres


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
        asyncpg.exceptions.InterfaceError("cannot call Connection.copy_records_to_table(): connection is closed"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_a_driver_fault_in_reaching_postgres_counts_as_unavailable(error: BaseException) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.exceptions.StringDataRightTruncationError("value too long for type character varying(40)"),
        asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape sequence"),
    ],
)
def test_a_fault_in_what_was_written_does_not(error: BaseException) -> None:
    assert not database_unavailable(error)


async def connect_error(server: RefusingPostgres) -> BaseException:
    engine = create_engine(Settings(database_url=server.url))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("the refusing server let a connection through")


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is starting up"),
        ("57P03", "the database system is shutting down"),
        ("53300", "sorry, too many clients already"),
    ],
)
async def test_a_refusal_at_connect_time_wrapped_by_sqlalchemy_counts_as_unavailable(
    sqlstate: str, message: str
) -> None:
    async with RefusingPostgres(sqlstate, message) as server:
        error = await connect_error(server)
    # SQLAlchemy hands it over as its bare DBAPIError, not marked as a disconnect: only the chain tells.
    assert type(error) is sa_exc.DBAPIError and not error.connection_invalidated
    assert database_unavailable(error)


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [("28P01", 'password authentication failed for user "postgres"'), ("3D000", 'database "mtactl" does not exist')],
)
async def test_a_refusal_that_retrying_cannot_fix_does_not(sqlstate: str, message: str) -> None:
    async with RefusingPostgres(sqlstate, message) as server:
        error = await connect_error(server)
    assert not database_unavailable(error)


def wrapped(error: Exception) -> sa_exc.DBAPIError:
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)
    try:
        raise adapted from error
    except AsyncAdapt_asyncpg_dbapi.Error as raised:
        return sa_exc.DBAPIError("INSERT …", None, raised)


def test_a_wrapped_content_fault_is_still_the_content_s_fault() -> None:
    assert database_unavailable(wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection")))
    assert not database_unavailable(wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key value")))
    assert not database_unavailable(wrapped(asyncpg.exceptions.StringDataRightTruncationError("value too long")))
