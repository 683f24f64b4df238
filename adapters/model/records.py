"""Posted bodies of JSON log records, whatever MTA wrote them: splitting a body into its records (one object, or an
array of them) without letting one record's fault fail the others, the nesting bound, and NUL escaping.

Every event source (``adapters.sources``) splits and bounds its bodies with these, so every ingest route has the
same rules for what is one record's fault and what is the body's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from adapters.model.events import storable_text

# Records nesting arrays/objects deeper than this are refused: the JSON decoders (msgspec here, jsonb in
# Postgres) recurse, and a real log record nests a few levels.
MAX_NESTING = 64

batch_splitter = msgspec.json.Decoder(list[msgspec.Raw])


def split_body(body: bytes) -> Sequence[bytes | msgspec.Raw]:
    """One record object or an array of them -> the raw records (raises msgspec.DecodeError if not JSON).

    The decoder recurses into nested values even to skip them, so JSON nested deeper than Python's recursion limit
    raises RecursionError; the array is then split by a scanner that does not recurse, so that one deep record is
    a fault of that record alone (``decode_record`` refuses it), not of the whole batch.
    """
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        try:
            return batch_splitter.decode(body)  # Raw views into the body: no copy until a record is decoded
        except RecursionError:
            return split_array(stripped)
    # Validate that it is JSON at all; JSON too deep to check this way is one record, refused for its depth.
    with contextlib.suppress(RecursionError):
        msgspec.json.decode(body)
    return [body]


# A JSON string (skipped whole, so brackets inside it do not count) or a structural character.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{},]')


def split_array(body: bytes) -> list[bytes]:
    """The top-level elements of a JSON array, found without recursion; raises msgspec.DecodeError when the
    brackets do not balance. Elements are not validated here: each is decoded on its own."""
    depth, start, elements = 0, 1, []
    end = -1
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                end = match.start()
                break
        elif token == b"," and depth == 1:
            elements.append(body[start : match.start()])
            start = match.end()
    if end < 0 or depth != 0 or body[end + 1 :].strip():
        raise msgspec.DecodeError("JSON is malformed: unbalanced brackets")
    last = body[start:end]
    if last.strip() or elements:
        elements.append(last)
    return elements


def nesting_depth(raw: bytes) -> int:
    """How deeply the JSON value nests arrays and objects (strings skipped), without recursion."""
    depth = deepest = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def check_nesting(raw: bytes) -> None:
    """Raise ValueError when the record nests deeper than ``MAX_NESTING``."""
    # Counting brackets is cheap; only a record with many of them is scanned for its depth.
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and nesting_depth(raw) > MAX_NESTING:
        raise ValueError(f"nested more than {MAX_NESTING} levels deep")


def escape_nul(value: Any) -> Any:
    """A decoded JSON value with every NUL in its strings (and mapping keys) written as the six characters
    \\u0000, which Postgres can store (it refuses NUL in text and in jsonb) and SQLite then stores the same."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(k): escape_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_nul(v) for v in value]
    return value
