"""The one rule for points in time given in query parameters (``since``, ``created_after``, …).

Accepted: an ISO-8601 date-time (``2025-01-01T10:00:00Z``, ``2025-01-01T10:00+02:00``; UTC when it has no
offset; seconds and fractions optional) or a calendar date (``2025-01-01``, midnight UTC). Refused: bare Unix
numbers (seconds or milliseconds? the reader cannot tell), week dates, and anything else.

Handlers annotate such parameters ``Instant``; the app decodes it with ``decode_instant`` (``TYPE_DECODERS``), and
the OpenAPI contract describes every date-time query parameter with ``INSTANT_SCHEMA``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from controlplane.errors import InvalidInput


class Instant(datetime):
    """A timezone-aware point in time read from a query parameter by the rule above."""

    def plain(self) -> datetime:
        """The same time as a ``datetime`` (for Structs declaring ``datetime`` fields)."""
        return datetime.fromtimestamp(self.timestamp(), self.tzinfo)


_FORM = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<hm>\d{2}:\d{2})(?P<s>:\d{2})?(?:\.(?P<frac>\d+))?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?)?$"
)

DESCRIPTION = "ISO-8601 date-time (UTC when it has no offset) or date (midnight UTC); Unix numbers are not accepted"
INSTANT_SCHEMA: dict[str, Any] = {
    "type": "string",
    "anyOf": [{"format": "date-time"}, {"format": "date"}],
    "description": DESCRIPTION,
    "examples": ["2025-01-01T10:00:00Z", "2025-01-01"],
}


def parse_instant(text: str) -> Instant:
    """``text`` by the rule; ValueError (saying what is accepted) otherwise."""
    match = _FORM.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a point in time: {DESCRIPTION}")
    iso = match["date"]
    if match["hm"]:
        iso += "T" + match["hm"] + (match["s"] or ":00")
        if match["frac"]:
            iso += "." + match["frac"][:6].ljust(6, "0")
        offset = match["offset"]
        iso += "+00:00" if offset is None or offset in "Zz" else offset
    try:
        value = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid date or time: {DESCRIPTION}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return Instant.fromtimestamp(value.timestamp(), value.tzinfo)


def decode_instant(_: type[Any], value: Any) -> Instant:
    if isinstance(value, datetime):
        return Instant.fromtimestamp(value.timestamp(), value.tzinfo or UTC)
    if not isinstance(value, str):
        raise InvalidInput(f"{value!r} is not a point in time: {DESCRIPTION}")
    return parse_instant(value)


def is_instant(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Instant)


TYPE_DECODERS = [(is_instant, decode_instant)]
