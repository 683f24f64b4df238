"""Which database faults mean "the database is away" (spool and retry) rather than "this write is wrong"."""

from __future__ import annotations

import asyncpg
import pytest

from controlplane.db.engine import database_unavailable


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
