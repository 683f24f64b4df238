"""Daily partitions of ``events`` on Postgres, retention on both backends, and the counters' housekeeping."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.db.tables import COUNTED_SUMS, EventRow

log = logging.getLogger("mtactl.partitions")
DAYS_AHEAD = 2


def partition_name(day: date) -> str:
    return f"events_{day:%Y%m%d}"


async def ensure_partitions(engine: AsyncEngine, today: date | None = None) -> list[str]:
    """Create the partitions for yesterday through ``DAYS_AHEAD`` days ahead (no-op on SQLite)."""
    if engine.dialect.name != "postgresql":
        return []
    today = today or datetime.now(UTC).date()
    created = []
    for offset in range(-1, DAYS_AHEAD + 1):
        day = today + timedelta(days=offset)
        name = partition_name(day)
        try:
            async with engine.begin() as connection:
                exists = await connection.scalar(text("SELECT to_regclass(:name)"), {"name": name})
                if exists is None:
                    await connection.execute(
                        text(
                            f"CREATE TABLE {name} PARTITION OF events FOR VALUES "
                            f"FROM ('{day.isoformat()} 00:00:00+00') TO ('{(day + timedelta(days=1)).isoformat()} "
                            "00:00:00+00')"
                        )
                    )
                    created.append(name)
        except Exception:
            # Typically rows for that day already sit in events_default; they stay there and stay queryable.
            log.exception("could not create partition %s", name)
    return created


async def apply_retention(engine: AsyncEngine, retention_days: int, now: datetime | None = None) -> int:
    """Drop what is older than the retention: whole partitions on Postgres, rows elsewhere. Returns rows/partitions
    removed."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    removed = 0
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            partitions = await connection.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent "
                    "WHERE p.relname = 'events' AND c.relname ~ '^events_[0-9]{8}$'"
                )
            )
            for (name,) in partitions:
                day = datetime.strptime(name[len("events_") :], "%Y%m%d").replace(tzinfo=UTC)
                if day + timedelta(days=1) <= cutoff:
                    await connection.execute(text(f"DROP TABLE {name}"))
                    removed += 1
            result = await connection.execute(
                text("DELETE FROM events_default WHERE event_at < :cutoff"), {"cutoff": cutoff}
            )
        else:
            result = await connection.execute(delete(EventRow).where(EventRow.event_at < cutoff))
        removed += result.rowcount or 0
    return removed


# A counters row (message_counts, metrics_counts) whose every sum is back to zero: it counts nothing any more.
COUNTS_NOTHING = " AND ".join(f"{name} = 0" for name in COUNTED_SUMS)


async def drop_empty_counts(engine: AsyncEngine) -> int:
    """Delete ``message_counts`` rows that count nothing any more. A trigger adding to a row this deletes waits for
    it (the row lock), then inserts the key anew: nothing is lost."""
    async with engine.begin() as connection:
        result = await connection.execute(text(f"DELETE FROM message_counts WHERE {COUNTS_NOTHING}"))
    return result.rowcount or 0


async def drop_empty_metrics_counts(engine: AsyncEngine) -> int:
    """Delete ``metrics_counts`` and ``metrics_depths`` rows that count nothing any more (a status no message of
    the tenant, domain or campaign has now; a pair with nothing queued), as ``drop_empty_counts`` does."""
    async with engine.begin() as connection:
        counts = await connection.execute(text(f"DELETE FROM metrics_counts WHERE {COUNTS_NOTHING}"))
        depths = await connection.execute(text("DELETE FROM metrics_depths WHERE messages = 0"))
    return (counts.rowcount or 0) + (depths.rowcount or 0)
