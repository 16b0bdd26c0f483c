"""The exchange's secret and the AES-GCM wrapping of organization reward keys under it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agents.exchange.errors import Refused
from vault.errors import TesseraError


class KeyBox:
    """AES-GCM wrapping of organization keys under the exchange's 32-byte secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("the exchange secret must be 32 bytes")
        self._aead = AESGCM(secret)

    def wrap(self, did: str, jwk: str) -> bytes:
        """Encrypt ``jwk``, bound to ``did`` as associated data."""
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, jwk.encode(), did.encode())

    def unwrap(self, did: str, blob: bytes) -> str:
        """Decrypt a wrapped key; Refused (503) if it was wrapped under another secret."""
        try:
            return self._aead.decrypt(blob[:12], bytes(blob[12:]), did.encode()).decode()
        except (InvalidTag, ValueError):
            raise Refused(
                "the exchange cannot unwrap this organization's key; post again", 503
            ) from None


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The exchange secret from a 0600 file, created with 32 random bytes if missing."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    data = target.read_bytes()
    if len(data) != 32:
        raise TesseraError(f"{target}: the exchange secret must be exactly 32 bytes")
    return data
