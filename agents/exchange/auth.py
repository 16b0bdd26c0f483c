"""Request signing for the exchange API: every call is signed by a did:key.

The signed message is ``METHOD\\nPATH?QUERY\\nsha256(body) hex\\ntime\\nnonce`` (``PATH`` alone
without a query; the path exactly as sent on the wire), signed with Ed25519 and carried
base64url in ``X-Tessera-Signature`` beside ``X-Tessera-DID``, ``X-Tessera-Time`` (unix seconds)
and ``X-Tessera-Nonce``. The verifier checks the signature and the clock skew here; replayed
nonces are caught by the store, which remembers every nonce for the skew window.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from identity.keys import b64url, b64url_decode, sign, verify
from vault.errors import TesseraError, VerificationFailed

SKEW_SECONDS = 300
HEADER_DID = "X-Tessera-DID"
HEADER_TIME = "X-Tessera-Time"
HEADER_NONCE = "X-Tessera-Nonce"
HEADER_SIGNATURE = "X-Tessera-Signature"
_NONCE_RE = re.compile(r"^[0-9a-f]{16,64}$")


class AuthRefused(TesseraError):
    """A call's signature headers are missing, malformed, stale, replayed or do not verify."""


@dataclass(frozen=True)
class SignedCall:
    """Who signed a call, when, and with which nonce."""

    did: str
    timestamp: int
    nonce: str


def signing_message(
    method: str, target: str, body_sha256: str, timestamp: int, nonce: str
) -> bytes:
    """The bytes a caller signs: method, path with query, body hash, time and nonce."""
    return f"{method.upper()}\n{target}\n{body_sha256}\n{timestamp}\n{nonce}".encode()


def sign_call(
    jwk: str, did: str, method: str, target: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """Headers that authenticate one call of ``method`` on ``target`` (path?query) with ``body``."""
    timestamp = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    digest = hashlib.sha256(body).hexdigest()
    signature = sign(jwk, signing_message(method, target, digest, timestamp, nonce))
    return {
        HEADER_DID: did,
        HEADER_TIME: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: b64url(signature),
    }


def precheck_call(
    headers: Mapping[str, str], now: float | None = None, skew: int = SKEW_SECONDS
) -> None:
    """Refuse a call whose signature headers are missing, malformed or stale (no crypto yet)."""
    # header lookups are case-insensitive in both requests and starlette mappings
    did = headers.get(HEADER_DID)
    stamp = headers.get(HEADER_TIME)
    nonce = headers.get(HEADER_NONCE)
    if not (did and stamp and nonce and headers.get(HEADER_SIGNATURE)):
        raise AuthRefused("call is not signed (X-Tessera-* headers missing)")
    if not stamp.isdigit() or len(stamp) > 12:
        raise AuthRefused("X-Tessera-Time must be unix seconds")
    if not _NONCE_RE.match(nonce):
        raise AuthRefused("X-Tessera-Nonce must be 16-64 lowercase hex characters")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > skew:
        raise AuthRefused(f"stale call: clock differs from the exchange by more than {skew} s")


def verify_call(
    headers: Mapping[str, str],
    method: str,
    target: str,
    body_sha256: str,
    now: float | None = None,
    skew: int = SKEW_SECONDS,
) -> SignedCall:
    """Check a call's signature and clock skew; return the signer. AuthRefused otherwise."""
    precheck_call(headers, now, skew)
    did, nonce = headers[HEADER_DID], headers[HEADER_NONCE]
    timestamp, signature = int(headers[HEADER_TIME]), headers[HEADER_SIGNATURE]
    try:
        raw = b64url_decode(signature)
        verify(did, signing_message(method, target, body_sha256, timestamp, nonce), raw)
    except (ValueError, VerificationFailed) as exc:
        raise AuthRefused(f"bad call signature ({exc})") from None
    return SignedCall(did=did, timestamp=timestamp, nonce=nonce)
