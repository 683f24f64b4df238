"""Wire types of domain health: seed 000's ``DomainHealthScore``, extended with what the score was made from."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from adapters.model import DomainHealthScore


class DomainHealth(DomainHealthScore, kw_only=True, omit_defaults=True):
    """``DomainHealthScore`` (rates in percent, times in seconds, as every QueueMetrics rate) plus its evidence.
    ``tenant_id``: the tenant whose mail to the domain it scores (absent: every tenant's)."""

    tenant_id: str | None = None
    deferral_rate: float = 0.0
    complaint_rate: float = 0.0
    attempts: int = 0  # delivered + bounced + deferred in the window
    window_minutes: int = 60
    computed_at: datetime | None = None


class DomainSort(enum.StrEnum):
    score = "score"  # worst first
    score_desc = "-score"
    domain = "domain"
    attempts_desc = "-attempts"  # busiest first


class DomainPage(msgspec.Struct, kw_only=True):
    data: list[DomainHealth]
    cursor: str | None
    has_more: bool


class DomainCursor(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    offset: int
