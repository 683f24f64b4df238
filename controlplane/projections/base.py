"""What every consumer of the event log is: a name, a durable checkpoint, and ``apply(batch)``.

A projection's ``apply`` runs in the same transaction that moves its checkpoint past the batch, so a crash at any
point leaves both as they were before the batch or both after it: no event is skipped, none is applied twice
with a visible effect, even for an ``apply`` that is not idempotent by itself (the rollups add to their counts).
``reset`` empties what the projection keeps (for a rebuild, in the rebuild's transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.projections.log import LoggedEvent


class Projection(Protocol):
    name: str

    async def apply(self, session: AsyncSession, events: Sequence[LoggedEvent]) -> None: ...

    async def reset(self, session: AsyncSession) -> None: ...
