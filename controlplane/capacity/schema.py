"""Wire types of egress sources (daily limit, sending window) and of capacity."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec
from msgspec import Meta

SourceName = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$", description="the egress source (KumoMTA) or zone")
]
Clock = Annotated[
    str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="local time of day, HH:MM", examples=["08:00"])
]
Names = Annotated[list[Annotated[str, Meta(min_length=1, max_length=200)]], Meta(max_length=100)]


class SendingWindow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Local hours the source may send in, within one day (the limit resets at local midnight)."""

    start: Clock = "00:00"
    end: Annotated[
        str,
        Meta(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", description="HH:MM, after start (24:00: midnight)"),
    ] = "24:00"
    timezone: Annotated[str, Meta(min_length=1, max_length=64, description="IANA time zone")] = "UTC"


class SourceSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    daily_limit: Annotated[int, Meta(ge=0, le=1_000_000_000, description="deliveries per local day")]
    window: SendingWindow = msgspec.field(default_factory=SendingWindow)
    nodes: Names | None = None  # node ids, names or label=value where it is held (default: every node)
    tenants: Names | None = None  # tenants sending through it, for estimates (default: every tenant)
    pools: Names | None = None  # pools whose queued messages it carries (default: the pool named like it)


class Source(msgspec.Struct, kw_only=True):
    name: str
    daily_limit: int
    window: SendingWindow
    nodes: list[str]
    tenants: list[str]
    pools: list[str]
    updated_at: datetime


class SourceList(msgspec.Struct, kw_only=True):
    data: list[Source]


class HeldPath(msgspec.Struct, kw_only=True):
    node: str
    path: str
    hold_id: str
    held_until: datetime
    lifted_at: datetime | None = None  # lifted by someone else (an operator): left alone until held_until


class SourceCapacity(msgspec.Struct, kw_only=True):
    name: str
    daily_limit: int
    used_today: int
    remaining_today: int
    window_open: bool
    next_window_opens_at: datetime
    holding: bool  # it must not send now (outside its window, or its limit reached)
    sends_again_at: datetime | None  # when such a hold ends
    held: list[HeldPath]  # what mtactl holds at the MTAs for it now
    messages_at_risk: int  # queued messages that would expire before sends_again_at
    warnings: list[str]


class CapacityReport(msgspec.Struct, kw_only=True):
    data: list[SourceCapacity]
    as_of: datetime
    warnings: list[str]


class DayPlan(msgspec.Struct, kw_only=True):
    date: date
    messages: int


class CapacityEstimate(msgspec.Struct, kw_only=True):
    messages: int
    sending_days: int | None  # None: no source can send at all
    finishes_at: datetime | None  # by the close of the last day's window
    per_day: list[DayPlan]
    sources: int  # sources counted
    tenant: str | None = None


class EnforcementStep(msgspec.Struct, kw_only=True):
    source: str
    node: str
    action: str  # held, released, left_lifted, refused, failed
    path: str | None = None
    detail: str | None = None
