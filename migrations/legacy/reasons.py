"""Why a legacy row was rejected, in words an operator can act on.

msgspec names the field but describes the constraint as the schema states it (a regular expression, ``Expected
`int` <= 10``); the reject report is read by whoever repairs the file, so the constraint is said in words, with the
value that broke it.
"""

from __future__ import annotations

import re
from typing import Any

from adapters.legacy import LegacyStatus

# Fields of the message a legacy row becomes, by the legacy field they come from: a row can pass as a QueueItem and
# still fail as a MessageQueueItem (a customerId too long for a tenant id), and the operator edits the legacy field.
MESSAGE_TO_LEGACY = {
    "tenant_id": "customerId",
    "campaign_id": "serviceType",
    "recipient": "customerEmail",
    "domain": "customerEmail",
    "queue_name": "customerId/serviceType/customerEmail",
    "priority": "priority",
    "created_at": "createdAt",
    "next_attempt_at": "estimatedWaitTime",
    "delivered_at": "actualWaitTime",
}
# What a field's pattern asks for, for the fields that have one.
PATTERNS = {
    "customerEmail": "an e-mail address (local-part@domain, without spaces or angle brackets)",
    "recipient": "an e-mail address (local-part@domain, without spaces or angle brackets)",
    "sender": "an e-mail address or empty (the null sender)",
}
CHOICES = {"status": ", ".join(s.value for s in LegacyStatus)}
TYPE_WORDS = {
    "int": "a whole number",
    "str": "a string",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
    "datetime": "a timestamp",
}
EXAMPLE_TIME = "2025-10-01T09:00:00Z"

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?:\.(?P<path>[^`]*))?`)?$", re.DOTALL)


def describe(exc: BaseException, raw: Any) -> str:
    """``exc`` (raised parsing ``raw`` as a legacy item or mapping it to a message), said in words."""
    reason = _describe(exc, raw)
    path = _AT.match(str(exc))
    head = (path.group("path") or "").split(".", 1)[0] if path else ""
    if head in MESSAGE_TO_LEGACY and MESSAGE_TO_LEGACY[head] != head:
        reason += f" (as the message's {head})"
    return reason


def _describe(exc: BaseException, raw: Any) -> str:
    text = str(exc)
    match = _AT.match(text)
    what, path = (match.group("what"), match.group("path")) if match else (text, None)
    field = _legacy_field(path) if path else None
    value = _value_at(raw, field) if field else None
    shown = f" {_show(value)}" if value is not None else ""

    if m := re.fullmatch(r"Object missing required field `([^`]+)`", what):
        return f"{_legacy_field(m.group(1))} is missing (it is required)"
    if m := re.fullmatch(r"Object contains unknown field `([^`]+)`", what):
        return f"unknown field {m.group(1)!r} (not a QueueItem field; misspelt?)"
    if field is None:
        if m := re.fullmatch(r"Expected `(\w+)`, got `(\w+)`", what):
            return f"the row is {_words(m.group(2))}, not a QueueItem object"
        return what
    if what.startswith("Expected `str` matching regex"):
        return f"{field}{shown} is not {PATTERNS.get(field, 'in the expected form')}"
    if what.startswith("Invalid enum value"):
        choices = CHOICES.get(field)
        return f"{field}{shown} is not one of {choices}" if choices else f"{field}{shown} is not an allowed value"
    if what == "Invalid RFC3339 encoded datetime":
        return f"{field}{shown} is not an ISO-8601 timestamp with a timezone, e.g. {EXAMPLE_TIME}"
    if what == "Expected `datetime` with a timezone component":
        return f"{field}{shown} has no timezone: add Z (UTC) or an offset such as +02:00"
    if m := re.fullmatch(r"Expected `\w+` of length >= (\d+)", what):
        return f"{field} is empty" if m.group(1) == "1" else f"{field} is shorter than {m.group(1)} characters"
    if m := re.fullmatch(r"Expected `\w+` of length <= (\d+)", what):
        return f"{field} is longer than {m.group(1)} characters"
    if m := re.fullmatch(r"Expected `(?:int|float)` (>=|<=|>|<) (-?\d+(?:\.\d+)?)", what):
        words = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}[m.group(1)]
        return f"{field} must be {words} {m.group(2)}{', got' + shown if shown else ''}"
    if m := re.fullmatch(r"Expected `(\w+)(?: \| \w+)*`, got `(\w+)`", what):
        given = f" ({_show(value)})" if value is not None else ""
        return f"{field} must be {_words(m.group(1))}, not {_words(m.group(2))}{given}"
    if m := re.fullmatch(r"Expected `(\w+)`", what):
        return f"{field} must be {_words(m.group(1))}{', got' + shown if shown else ''}"
    return f"{field}: {what}"


def _legacy_field(path: str) -> str:
    head = path.split(".", 1)[0].split("[", 1)[0]
    return MESSAGE_TO_LEGACY.get(head, path)


def _value_at(raw: Any, path: str) -> Any:
    if isinstance(raw, dict) and "." not in path and "[" not in path:
        return raw.get(path)
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _words(type_name: str) -> str:
    return TYPE_WORDS.get(type_name, f"a {type_name}")
