"""Sending windows, daily limits and seed 002's delivery estimate, as pure functions of a clock reading.

A source sends within one window a day (``start`` to ``end`` local time in its IANA time zone; ``end`` may be
``24:00``) and at most ``daily_limit`` deliveries per local calendar day, counted from local midnight. A window
lies within one local day: the limit resets at midnight, so a window across it would be cut in two anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Beyond this an estimate is refused: no campaign is planned a century ahead, and dates end at year 9999.
MAX_ESTIMATE_DAYS = 36_500
# The per-day breakdown is listed for this many days at most (the totals cover every day).
MAX_LISTED_DAYS = 1_000


def parse_clock(text: str, *, allow_midnight_end: bool = False) -> int:
    """ "HH:MM" → minutes since local midnight; "24:00" only as an end. ``ValueError`` naming what is wrong."""
    hours, sep, minutes = text.partition(":")
    if not (sep and len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit()):
        raise ValueError(f"{text!r} is not a time of day as HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60 or (value == 24 * 60 and not allow_midnight_end):
        raise ValueError(
            f"{text!r} is not a time of day (00:00 to 23:59" + (", or 24:00)" if allow_midnight_end else ")")
        )
    return value


@dataclass(frozen=True)
class Window:
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight, above start (1440: midnight ending the day)
    zone: ZoneInfo

    def local_day(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()

    def _at(self, day: date, minutes: int) -> datetime:
        # Local wall time → UTC. A wall time skipped by a DST change lands just after the change (zoneinfo's fold).
        base = datetime.combine(day, time(0), tzinfo=self.zone)
        if minutes >= 24 * 60:
            return datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone).astimezone(UTC)
        wall = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=self.zone)
        return max(wall.astimezone(UTC), base.astimezone(UTC))

    def opens(self, day: date) -> datetime:
        return self._at(day, self.start)

    def closes(self, day: date) -> datetime:
        return self._at(day, self.end)

    def midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC)

    def is_open(self, now: datetime) -> bool:
        day = self.local_day(now)
        return self.opens(day) <= now < self.closes(day)

    def next_opening(self, now: datetime) -> datetime:
        """The first opening strictly after ``now``."""
        day = self.local_day(now)
        for offset in range(3):
            opening = self.opens(day + timedelta(days=offset))
            if opening > now:
                return opening
        raise AssertionError("a window opens once a day")  # pragma: no cover


ALL_DAY = (0, 24 * 60)


@dataclass(frozen=True)
class SourceState:
    """Where one source stands at ``now``."""

    window_open: bool
    used_today: int
    remaining_today: int
    next_window_opens_at: datetime
    holding: bool  # it must not send now: outside its window, or its day's limit is reached
    sends_again_at: datetime | None  # when a hold ends: the first opening with capacity (None: not held)
    day_started_at: datetime  # local midnight of today, in UTC: usage is counted from here


def state_of(window: Window, daily_limit: int, used_today: int, now: datetime) -> SourceState:
    remaining = max(0, daily_limit - used_today)
    today = window.local_day(now)
    is_open = window.is_open(now)
    holding = not is_open or remaining == 0
    resumes: datetime | None = None
    if holding:
        if remaining > 0 and now < window.opens(today):
            resumes = window.opens(today)
        else:  # the limit is spent, or today's window is over: the next day's window, after the reset
            resumes = window.opens(today + timedelta(days=1))
    return SourceState(
        window_open=is_open,
        used_today=used_today,
        remaining_today=remaining,
        next_window_opens_at=window.next_opening(now),
        holding=holding,
        sends_again_at=resumes,
        day_started_at=window.midnight(today),
    )


def spread(capacities: Mapping[str, int], messages: int) -> dict[str, int]:
    """Seed 002's rule, each message to the source with the most remaining capacity (ties by name), computed at
    once: the largest capacities are levelled down until ``messages`` are placed."""
    total = sum(capacities.values())
    if messages >= total:
        return dict(capacities)
    if messages <= 0:
        return dict.fromkeys(capacities, 0)

    def placed(level: int) -> int:
        return sum(max(0, c - level) for c in capacities.values())

    low, high = 0, max(capacities.values())  # placed(high) == 0 <= messages < placed(0) == total
    while low < high:  # the lowest level at which no more than ``messages`` are placed
        middle = (low + high) // 2
        if placed(middle) <= messages:
            high = middle
        else:
            low = middle + 1
    level = low
    given = {name: max(0, c - level) for name, c in capacities.items()}
    left = messages - placed(level)
    # Those still holding ``level`` each take one more, in name order (fewer than all of them, by the search).
    for name in sorted(n for n, c in capacities.items() if c >= level and level > 0):
        if left == 0:
            break
        given[name] += 1
        left -= 1
    return given


@dataclass(frozen=True)
class PlannedSource:
    name: str
    window: Window
    daily_limit: int
    remaining_today: int


@dataclass(frozen=True)
class Estimate:
    messages: int
    sending_days: int | None  # None: no source can send at all
    finishes_at: datetime | None
    per_day: list[tuple[date, int]]


def estimate(sources: Sequence[PlannedSource], messages: int, now: datetime) -> Estimate:
    """When ``messages`` would all be sent, day by day. Today counts the sources' remaining capacity if their
    window has not closed yet today; each later day their whole limit. Each day's messages go to the sources with
    the most remaining capacity first (``spread``). A sending day is one daily cycle of the sources; its date is
    the earliest local date among the sources sending that day (they differ only across time zones).
    ``finishes_at`` is a bound: the close of the latest window used on the last day (mtactl does not model the
    pace inside a window: an MTA sends as fast as the destinations take it, until the limit or the close)."""
    usable = sorted((s for s in sources if s.daily_limit > 0), key=lambda s: s.name)
    if not usable:
        return Estimate(messages=messages, sending_days=None, finishes_at=None, per_day=[])
    per_day: list[tuple[date, int]] = []
    sending_days = 0
    finishes: datetime | None = None
    left, offset = messages, 0
    full = sum(s.daily_limit for s in usable)
    while left > 0:
        days = {s.name: s.window.local_day(now) + timedelta(days=offset) for s in usable}
        if offset == 0:
            capacities = {s.name: s.remaining_today if now < s.window.closes(days[s.name]) else 0 for s in usable}
        else:
            capacities = {s.name: s.daily_limit for s in usable}
            # From tomorrow every day is alike: whole days are counted at once rather than walked one by one.
            whole = (left - 1) // full
            if offset + whole > MAX_ESTIMATE_DAYS:
                raise ValueError(f"more than {MAX_ESTIMATE_DAYS} days of sending at the current limits")
            first = min(days.values())
            per_day += [(first + timedelta(days=k), full) for k in range(min(whole, MAX_LISTED_DAYS))]
            sending_days += whole
            left -= whole * full
            offset += whole
            days = {name: day + timedelta(days=whole) for name, day in days.items()}
        given = spread(capacities, left)
        used = [s for s in usable if given[s.name] > 0]
        if used:
            sending_days += 1
            per_day.append((min(days[s.name] for s in used), sum(given.values())))
            finishes = max(s.window.closes(days[s.name]) for s in used)
        left -= sum(given.values())
        offset += 1
    return Estimate(
        messages=messages,
        sending_days=sending_days,
        finishes_at=finishes if messages else now,
        per_day=per_day[:MAX_LISTED_DAYS],
    )


def ceil_seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))
