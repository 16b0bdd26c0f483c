"""Field checks for signed payloads: each returns the field or raises VerificationFailed.

The reasons name the field (``where.key``) so a person can read what is wrong with a token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from identity.keys import jws_verify
from vault.errors import VerificationFailed
from vault.timeparse import parse_iso8601

MAX_TOKEN_BYTES = 64 * 1024


def when(value: Any, what: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time ending in Z."""
    if not isinstance(value, str) or not value.endswith("Z"):
        raise VerificationFailed(f"{what} must be an ISO 8601 UTC time ending in Z")
    try:
        return parse_iso8601(value)[0]
    except ValueError:
        raise VerificationFailed(f"{what} is not a valid time: {value!r}") from None


def number(obj: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    """``obj[key]`` as a finite number within low..high."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VerificationFailed(f"{where}.{key} must be a number")
    if not low <= value <= high:
        raise VerificationFailed(f"{where}.{key} = {value} is outside {low}..{high}")
    return float(value)


def integer(obj: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    """``obj[key]`` as an integer within low..high (never a bool)."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise VerificationFailed(f"{where}.{key} must be an integer in {low}..{high}")
    return value


def text(obj: Mapping[str, Any], key: str, where: str, limit: int = 200) -> str:
    """``obj[key]`` as a non-blank text of at most ``limit`` characters."""
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise VerificationFailed(f"{where}.{key} must be a non-empty text of at most {limit}")
    return value


def member_object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``obj[key]`` as a JSON object."""
    value = obj.get(key)
    if not isinstance(value, dict):
        raise VerificationFailed(f"{where}.{key} must be an object")
    return value


def verified_token(
    jws: Any, what: str, expected_did: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(signer, payload) of a JWS of at most MAX_TOKEN_BYTES with an object payload."""
    if not isinstance(jws, str) or len(jws) > MAX_TOKEN_BYTES:
        raise VerificationFailed(f"{what}: not a JWS or too large")
    try:
        signer, payload = jws_verify(jws, expected_did)
    except VerificationFailed as exc:
        raise VerificationFailed(f"{what}: {exc}") from None
    if not isinstance(payload, dict):
        raise VerificationFailed(f"{what}: payload is not an object")
    return signer, payload
