"""Field checks for credential payloads: each returns the field or raises VerificationFailed.

The reasons name the field (``where.key``) so a person can read what is wrong with a token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from identity.vc_jwt import verify_credential
from vault.errors import VerificationFailed
from vault.timeparse import parse_iso8601


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
    token: Any, kind: str, what: str, expected_did: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(issuer, flat payload) of a credential of ``kind``; reasons start with ``what``."""
    try:
        return verify_credential(token, kind, expected_did)
    except VerificationFailed as exc:
        raise VerificationFailed(f"{what}: {exc}") from None
