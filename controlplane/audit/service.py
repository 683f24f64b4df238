"""Writing and reading the append-only audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controlplane.db.tables import AuditRow


class AuditEntry(msgspec.Struct, kw_only=True):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    reason: str | None
    detail: dict[str, Any] | None
    success: bool


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(
        self,
        *,
        actor: str,
        action: str,
        success: bool,
        target: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        """Append one entry; inside ``session`` when given, so it commits (or not) with the audited change."""
        row = AuditRow(
            at=datetime.now(UTC),
            actor=actor,
            action=action,
            target=target,
            reason=reason,
            detail=detail,
            success=success,
        )
        if session is not None:
            session.add(row)
            return
        async with self._sessions.begin() as own:
            own.add(row)

    async def recent(self, *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if action:
            query = query.where(AuditRow.action == action)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [
            AuditEntry(
                id=r.id,
                at=r.at,
                actor=r.actor,
                action=r.action,
                target=r.target,
                reason=r.reason,
                detail=r.detail,
                success=r.success,
            )
            for r in rows
        ]
