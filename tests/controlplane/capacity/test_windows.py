"""Sending windows and seed 002's estimate, as pure functions of a clock reading."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.capacity.windows import (
    MAX_ESTIMATE_DAYS,
    MAX_LISTED_DAYS,
    PlannedSource,
    Window,
    estimate,
    parse_clock,
    spread,
    state_of,
)

BERLIN = ZoneInfo("Europe/Berlin")
DAY = Window(start=8 * 60, end=20 * 60, zone=BERLIN)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def thirty(remaining: int = 1000, window: Window = DAY) -> list[PlannedSource]:
    return [PlannedSource(f"ip-{n}", window, 1000, remaining) for n in range(30)]


def test_seed_002s_example_takes_four_days_when_asked_before_the_window_opens() -> None:
    result = estimate(thirty(), 100_000, at(2, 6))
    assert result.sending_days == 4
    assert [n for _, n in result.per_day] == [30_000, 30_000, 30_000, 10_000]
    assert [d for d, _ in result.per_day] == [date(2026, 3, d) for d in (2, 3, 4, 5)]
    assert result.finishes_at == at(5, 20)  # by the close of the fourth day's window


def test_a_request_mid_window_counts_only_what_is_left_of_today() -> None:
    result = estimate(thirty(remaining=600), 100_000, at(2, 14))
    assert [n for _, n in result.per_day] == [18_000, 30_000, 30_000, 22_000]
    assert result.sending_days == 4


def test_a_window_that_closed_at_midday_leaves_today_out() -> None:
    morning = Window(start=6 * 60, end=12 * 60, zone=BERLIN)
    after_close = estimate(thirty(window=morning), 100_000, at(2, 13))
    assert after_close.per_day[0][0] == date(2026, 3, 3)
    assert [n for _, n in after_close.per_day] == [30_000, 30_000, 30_000, 10_000]
    assert after_close.finishes_at == at(6, 12)
    before_close = estimate(thirty(window=morning), 100_000, at(2, 11))
    assert before_close.per_day[0][0] == date(2026, 3, 2)


def test_no_source_with_a_limit_means_no_estimate() -> None:
    result = estimate([PlannedSource("ip-0", DAY, 0, 0)], 10, at(2, 6))
    assert (result.sending_days, result.finishes_at, result.per_day) == (None, None, [])


def test_a_century_of_sending_is_refused() -> None:
    with pytest.raises(ValueError, match="days"):
        estimate([PlannedSource("ip-0", DAY, 1, 1)], 10**9, at(2, 6))


def test_times_of_day_are_checked() -> None:
    assert parse_clock("08:30") == 510
    assert parse_clock("24:00", allow_midnight_end=True) == 1440
    for bad in ("24:00", "8:00", "08:60", "ab:cd", "25:00", ""):
        with pytest.raises(ValueError):
            parse_clock(bad)


def test_a_source_past_its_limit_is_held_until_tomorrows_window() -> None:
    state = state_of(DAY, 1000, 1000, at(2, 15))
    assert state.holding and state.window_open
    assert state.sends_again_at == at(3, 8)
    before = state_of(DAY, 1000, 10, at(2, 7))
    assert before.holding and before.sends_again_at == at(2, 8)
    inside = state_of(DAY, 1000, 10, at(2, 9))
    assert not inside.holding and inside.sends_again_at is None and inside.remaining_today == 990


capacities = st.dictionaries(st.sampled_from([f"s{n}" for n in range(8)]), st.integers(0, 2000), min_size=1)


@given(capacities, st.integers(0, 20_000))
def test_spread_places_every_message_it_can_most_remaining_capacity_first(caps: dict[str, int], n: int) -> None:
    given_out = spread(caps, n)
    assert sum(given_out.values()) == min(n, sum(caps.values()))
    assert all(0 <= given_out[k] <= caps[k] for k in caps)
    left = {k: caps[k] - given_out[k] for k in caps}
    # A source given a message had at least as much left as any other at that moment.
    for k in caps:
        if given_out[k]:
            assert all(left[k] + 1 >= left[j] for j in caps)


@given(
    st.lists(
        st.tuples(st.integers(0, 23), st.integers(1, 24), st.integers(0, 3000), st.integers(0, 3000)),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 200_000),
    st.integers(0, 24 * 60 * 3),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Kathmandu", "UTC"]),
)
def test_an_estimate_sends_every_message_on_days_with_capacity(
    specs: list[tuple[int, int, int, int]], messages: int, minutes: int, zone: str
) -> None:
    sources = []
    for n, (start, length, limit, used) in enumerate(specs):
        end = min(24, start + length)
        if end <= start:
            continue
        window = Window(start * 60, end * 60, ZoneInfo(zone))
        sources.append(PlannedSource(f"s{n}", window, limit, max(0, limit - used)))
    now = datetime(2026, 3, 27, tzinfo=UTC) + timedelta(minutes=minutes)  # across a DST change
    total = sum(s.daily_limit for s in sources)
    if total and messages > total * MAX_ESTIMATE_DAYS:
        with pytest.raises(ValueError):
            estimate(sources, messages, now)
        return
    result = estimate(sources, messages, now)
    if not total:
        assert result.sending_days is None
        return
    assert result.sending_days is not None
    if result.sending_days > MAX_LISTED_DAYS:
        assert len(result.per_day) == MAX_LISTED_DAYS
        return
    assert sum(n for _, n in result.per_day) == messages
    assert result.sending_days == len(result.per_day)
    assert all(n > 0 for _, n in result.per_day)
    assert result.finishes_at is not None and result.finishes_at > now


@given(st.integers(0, 23), st.integers(1, 24), st.integers(0, 5), st.integers(0, 60 * 24 * 4))
def test_a_held_source_sends_again_inside_its_window_with_capacity(
    start: int, length: int, used: int, minutes: int
) -> None:
    end = min(24, start + length)
    if end <= start:
        return
    window = Window(start * 60, end * 60, BERLIN)
    now = datetime(2026, 3, 27, tzinfo=UTC) + timedelta(minutes=minutes)
    state = state_of(window, 3, used, now)
    assert state.holding == (not window.is_open(now) or used >= 3)
    if state.holding:
        assert state.sends_again_at is not None and state.sends_again_at > now
        assert window.is_open(state.sends_again_at)
