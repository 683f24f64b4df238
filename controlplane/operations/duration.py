"""Hold durations as kumod reads them (the ``humantime`` crate): "90s", "2h", "1h 30m", "7days".

Checked here, before any node is asked, so a typo is refused in words instead of by kumod (or by a regular
expression that let "5parsecs" through): every part is a whole number and a unit humantime knows, and the total
is not zero, which for a suspension or a bounce would mean "end it at once".
"""

from __future__ import annotations

import re
from datetime import timedelta

from controlplane.errors import InvalidInput

# humantime's units (case matters: "M" is months, "m" minutes), in seconds.
UNITS: dict[str, float] = {
    **dict.fromkeys(("nsec", "ns"), 1e-9),
    **dict.fromkeys(("usec", "us"), 1e-6),
    **dict.fromkeys(("msec", "ms"), 1e-3),
    **dict.fromkeys(("seconds", "second", "sec", "s"), 1),
    **dict.fromkeys(("minutes", "minute", "min", "m"), 60),
    **dict.fromkeys(("hours", "hour", "hr", "h"), 3600),
    **dict.fromkeys(("days", "day", "d"), 86400),
    **dict.fromkeys(("weeks", "week", "w"), 7 * 86400),
    **dict.fromkeys(("months", "month", "M"), 30.44 * 86400),
    **dict.fromkeys(("years", "year", "y"), 365.25 * 86400),
}
MAX_SECONDS = 10 * 365.25 * 86400
EXAMPLES = "e.g. 90s, 30m, 2h, 1h 30m, 7days"
_PART = re.compile(r"\s*(\d+)\s*([A-Za-z]+)\s*")


def parse_duration(text: str) -> timedelta:
    """The length of a humantime duration; ``ValueError`` saying what is wrong, in words, otherwise."""
    if not text.strip():
        raise ValueError(f"the duration is empty; give one, {EXAMPLES}")
    seconds = 0.0
    position = 0
    while position < len(text):
        part = _PART.match(text, position)
        if part is None:
            rest = text[position:].strip()
            if re.match(r"\d+[.,]\d", rest):
                raise ValueError(f"{text!r} is not a duration: whole numbers only (1h 30m, not 1.5h)")
            if rest and rest[0].isdigit():
                raise ValueError(f"{text!r} is not a duration: {rest!r} has no unit (s, m, h, d or w; {EXAMPLES})")
            raise ValueError(f"{text!r} is not a duration: each part is a number and a unit ({EXAMPLES})")
        number, unit = part.groups()
        if unit not in UNITS:
            raise ValueError(f"{text!r} is not a duration: unknown unit {unit!r} (use s, m, h, d or w; {EXAMPLES})")
        seconds += int(number) * UNITS[unit]
        position = part.end()
    if seconds <= 0:
        raise ValueError(f"{text!r} is zero: a hold that ends at once does nothing; give a positive duration")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than ten years; lift the hold when it is no longer wanted instead")
    return timedelta(seconds=seconds)


def check_duration(text: str | None) -> None:
    """Refuse a bad duration as invalid input naming the field (HTTP 400)."""
    if text is None:
        return
    try:
        parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="duration") from None
