"""Opaque keyset cursors: a Struct of the last row's sort key, as URL-safe base64 of its JSON."""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import msgspec

from controlplane.errors import InvalidInput

CursorT = TypeVar("CursorT", bound=msgspec.Struct)


def encode_cursor(cursor: msgspec.Struct) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str, kind: type[CursorT]) -> CursorT:
    """The cursor's Struct; anything this API did not issue is a 400 naming ``cursor``."""
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput("cursor is not one this API issued", field="cursor") from None
