"""What the API and the CLI say about the projections."""

from __future__ import annotations

from datetime import datetime

import msgspec


class ProjectionStatus(msgspec.Struct, kw_only=True):
    name: str
    applied: int  # events applied since it was (re)built
    events_behind: int  # counted up to 100,000
    lag_seconds: float  # how long the oldest event not applied yet has waited (0 when caught up)
    checkpoint_at: datetime | None  # when the checkpoint last moved
    position: str  # the checkpoint: "tx/event_at/dedupe_key"
