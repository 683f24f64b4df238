"""The response patterns of ``response_match`` rules, bounded in cost.

Every stored event's response is searched with every rule's pattern as the projection applies it, so a pattern
must not be able to take long on any response. Python's ``re`` backtracks and has no time limit; its cost is kept
down by what is accepted, not by a timeout:

* at most 200 characters, and it must compile;
* no back-references, look-arounds or conditionals;
* a repeated part may contain no other repeat and no alternation: ``(a+)+``, ``(a|aa)*`` and ``(\\w+\\s?)*`` are
  the exponential-backtracking shapes, and each is refused;
* at most two long repeats (``*``, ``+``, ``{n,m}`` with m above 10) in all: each one multiplies the work by the
  text's length;
* the response searched is its first ``RESPONSE_CHARS`` characters (an SMTP reply's useful part is at its start).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from typing import Any

from controlplane.errors import InvalidInput

# Python 3.11 keeps re's parser here (``sre_parse`` is its deprecated alias); typeshed does not describe it.
sre_parse: Any = importlib.import_module("re._parser")

RESPONSE_CHARS = 300
MAX_UNBOUNDED = 2
LONG_REPEAT = 10  # a bounded repeat longer than this costs about what an unbounded one does on a response
_REPEATS = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)} - {None}
_REFUSED = {
    sre_parse.GROUPREF: "back-references",
    sre_parse.GROUPREF_EXISTS: "conditionals",
    sre_parse.ASSERT: "look-aheads/behinds",
    sre_parse.ASSERT_NOT: "look-aheads/behinds",
}


def check_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or ``InvalidInput`` naming ``pattern`` and saying why it is refused."""
    if len(pattern) > 200:
        raise InvalidInput("pattern is longer than 200 characters", field="pattern")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
        parsed = sre_parse.parse(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        raise InvalidInput(f"pattern is not a regular expression: {exc}", field="pattern") from None
    unbounded = _walk(parsed, inside_repeat=False)
    if unbounded > MAX_UNBOUNDED:
        raise InvalidInput(
            f"pattern has {unbounded} long repeats (*, +, or {{n,m}} with m above {LONG_REPEAT}); at most "
            f"{MAX_UNBOUNDED} are allowed",
            field="pattern",
        )
    return compiled


def _walk(items: Any, *, inside_repeat: bool) -> int:
    """Refuse the costly shapes under ``items``; returns the number of unbounded repeats found."""
    unbounded = 0
    for op, value in items:
        if op in _REFUSED:
            raise InvalidInput(f"pattern uses {_REFUSED[op]}, which are not allowed here", field="pattern")
        if op in _REPEATS:
            _low, high, body = value
            if inside_repeat:
                raise InvalidInput(
                    "pattern repeats a part that is itself repeated (e.g. (a+)+): its matching time can explode",
                    field="pattern",
                )
            if high is sre_parse.MAXREPEAT or high > LONG_REPEAT:
                unbounded += 1
            unbounded += _walk(body, inside_repeat=True)
        elif op is sre_parse.BRANCH:
            if inside_repeat:
                raise InvalidInput(
                    "pattern repeats an alternation (e.g. (a|aa)*): its matching time can explode", field="pattern"
                )
            for branch in value[1]:
                unbounded += _walk(branch, inside_repeat=inside_repeat)
        elif op is sre_parse.SUBPATTERN:
            unbounded += _walk(value[-1], inside_repeat=inside_repeat)
        elif op is sre_parse.ATOMIC_GROUP if hasattr(sre_parse, "ATOMIC_GROUP") else False:
            unbounded += _walk(value, inside_repeat=inside_repeat)
    return unbounded


@lru_cache(maxsize=1024)
def compiled(pattern: str) -> re.Pattern[str]:
    """A stored (so already checked) pattern, compiled once per process."""
    return re.compile(pattern, re.IGNORECASE)


def matches(pattern: str, response: str) -> bool:
    return compiled(pattern).search(response[:RESPONSE_CHARS]) is not None
