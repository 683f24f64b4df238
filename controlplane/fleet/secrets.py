"""AES-GCM for MTA credentials at rest (the ``cryptography`` package's AESGCM, not a hand-made cipher)."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SecretBoxError(ValueError):
    pass


class SecretBox:
    def __init__(self, key_b64: str) -> None:
        try:
            key = base64.b64decode(key_b64, validate=True)
        except (binascii.Error, ValueError):
            raise SecretBoxError("MTACTL_SECRET_KEY is not base64") from None
        if len(key) != 32:
            raise SecretBoxError("MTACTL_SECRET_KEY must decode to 32 bytes (e.g. `openssl rand -base64 32`)")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Nonce || ciphertext; ``context`` (the node id) is authenticated, so a blob cannot move between nodes."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
        except InvalidTag:
            raise SecretBoxError("credentials cannot be decrypted with this MTACTL_SECRET_KEY") from None
