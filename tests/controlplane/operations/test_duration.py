"""Hold durations: what kumod's humantime reads is accepted; anything else is refused in words."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.operations.duration import parse_duration


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("90s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("1h 30m", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("7days", timedelta(days=7)),
        ("2 weeks", timedelta(weeks=2)),
        ("500ms", timedelta(milliseconds=500)),
    ],
)
def test_humantime_durations_are_read_as_kumod_reads_them(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("5parsecs", "'5parsecs' is not a duration: unknown unit 'parsecs' (use s, m, h, d or w;"),
        ("0s", "'0s' is zero: a hold that ends at once does nothing; give a positive duration"),
        ("0h 0m", "'0h 0m' is zero"),
        ("forever", "'forever' is not a duration: each part is a number and a unit (e.g. 90s, 30m"),
        ("30", "'30' is not a duration: '30' has no unit"),
        ("1.5h", "'1.5h' is not a duration: whole numbers only (1h 30m, not 1.5h)"),
        ("", "the duration is empty"),
        ("99999y", "'99999y' is longer than ten years"),
    ],
)
def test_anything_else_is_refused_in_words(text: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_duration(text)
    assert str(refused.value).startswith(says) and "regex" not in str(refused.value)
