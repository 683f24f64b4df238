"""Writing suppression entries: one upsert rule shared by the projection, the API and the import."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.db.tables import SuppressionRow

TABLE: Table = SuppressionRow.__table__  # type: ignore[assignment]
C = TABLE.c
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
CHUNK = 1000  # rows per statement: 14 parameters each, far below what a statement may carry


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a time so near the ends of the calendar that UTC cannot hold it is clamped to them (an
    entry expiring in year 1 has expired: the same as expiring a day later)."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return EARLIEST if value.year < 5000 else LATEST


def active(now: datetime) -> ColumnElement[bool]:
    """Entries that apply at ``now``: not removed, not expired."""
    return and_(C.removed_at.is_(None), or_(C.expires_at.is_(None), C.expires_at > now))


def replaceable(new: Any) -> ColumnElement[bool]:
    """When a new entry takes the place of the stored one for the same address and scope: the stored one was
    removed before the new one's cause, or had expired by then, or was temporary and the new one is permanent.
    Otherwise the stored entry stays as it is (the first cause is kept: a replay changes nothing)."""
    return or_(
        and_(C.removed_at.is_not(None), C.removed_at < new.created_at),
        and_(C.expires_at.is_not(None), C.expires_at <= new.created_at),
        and_(C.expires_at.is_not(None), new.expires_at.is_(None), C.removed_at.is_(None)),
    )


async def upsert(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Write entries (dicts of ``suppressions`` columns) by the ``replaceable`` rule; one statement per chunk."""
    if not rows:
        return
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    keyed = {(r["email"], r["scope_key"]): r for r in sorted(rows, key=lambda r: r["created_at"], reverse=True)}
    ordered = [keyed[k] for k in sorted(keyed)]  # one order for every writer's row locks
    # One statement compiled once, the rows sent in batches by the driver (executemany); a multi-row VALUES per
    # chunk was compiled anew for every length.
    statement = insert(TABLE)
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[C.email, C.scope_key],
        set_={
            name: getattr(new, name)
            for name in (
                "tenant_id",
                "domain",
                "reason",
                "created_at",
                "expires_at",
                "source_event_id",
                "created_by",
                "note",
                "enforced_at",
                "held_messages",
                "cancel_operation_id",
                "removed_at",
                "removed_by",
            )
        },
        where=replaceable(new),
    )
    for start in range(0, len(ordered), CHUNK):
        await session.execute(statement, ordered[start : start + CHUNK])


def entry_row(
    *,
    email: str,
    tenant_id: str | None,
    reason: str,
    created_at: datetime,
    expires_at: datetime | None,
    created_by: str,
    source_event_id: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "email": email,
        "scope_key": tenant_id or "",
        "tenant_id": tenant_id,
        "domain": email.rpartition("@")[2],
        "reason": reason,
        "created_at": created_at,
        "expires_at": expires_at,
        "source_event_id": source_event_id,
        "created_by": created_by,
        "note": note,
        "enforced_at": None,
        "held_messages": None,
        "cancel_operation_id": None,
        "removed_at": None,
        "removed_by": None,
    }
