"""Column types that behave the same on Postgres and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, String, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

# JSONB on Postgres (indexable, compact), JSON text elsewhere.
JsonDocument: TypeEngine[Any] = JSON().with_variant(postgresql.JSONB(), "postgresql")
# A text array on Postgres (GIN-indexable with @>), a JSON array elsewhere.
TextList: TypeEngine[Any] = JSON().with_variant(postgresql.ARRAY(Text()), "postgresql")


def code_point_string(length: int) -> TypeEngine[str]:
    """A string column compared and sorted by code point on every backend, as Python compares ``str``: collation
    "C" on Postgres (whatever the database's default), SQLite's default (BINARY) elsewhere."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out, whatever the backend.

    SQLite has no timezone type and SQLAlchemy hands back naive values from it, so values are normalised to UTC
    before they are written and marked UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
