"""Reward receipt chains: the check a person (and the exchange) runs over their receipts.

Receipts are verifiable credentials issued by the organization's key (VC-JWT,
``identity.vc_jwt``) and hash-chained per (organization, person): ``seq`` counts from 0,
``prev`` is the SHA-256 hex of the previous receipt's compact token string, so a
removed, reordered or altered receipt breaks the chain. Amounts follow the request terms:
``per_update`` per accepted update, and at most ``cap`` per person and request (the receipt
that reaches the cap carries only the remainder). Sums use decimal arithmetic on the shortest
float representation, so 0.1 + 0.2 reaches a cap of 0.3 exactly.

The exchange issues receipts by these rules (``agents.exchange.rewards``); the vault checks
them here, below the federated code that produces them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from identity.vc_jwt import verify_credential
from vault.errors import VerificationFailed


def receipt_hash(receipt_jws: str) -> str:
    """SHA-256 hex of a receipt's compact token: what the next receipt's ``prev`` holds."""
    return hashlib.sha256(receipt_jws.encode("ascii")).hexdigest()


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def next_amount(reward: Mapping[str, Any], paid: Iterable[float]) -> float | None:
    """What the next accepted update earns under ``reward`` terms; None once the cap is reached."""
    remaining = _dec(reward["cap"]) - sum((_dec(a) for a in paid), Decimal(0))
    amount = min(_dec(reward["per_update"]), remaining)
    return float(amount) if amount > 0 else None


def _check_issued(value: Any, where: str) -> None:
    # the exchange contract's time format: ISO-8601 UTC ending in Z
    if not isinstance(value, str) or not value.endswith("Z"):
        raise VerificationFailed(f"{where}: issued must be an ISO-8601 UTC time ending in Z")
    try:
        datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise VerificationFailed(
            f"{where}: issued is not an ISO-8601 time: {value[:40]!r}"
        ) from None


def _check_payload(payload: Any, index: int, org_did: str, person_did: str) -> dict[str, Any]:
    where = f"receipt {index}"
    if not isinstance(payload, dict) or payload.get("type") != "RewardReceipt":
        raise VerificationFailed(f"{where} is not a RewardReceipt")
    if payload.get("organization") != org_did:
        raise VerificationFailed(f"{where} names another organization")
    if payload.get("person") != person_did:
        raise VerificationFailed(f"{where} is for another person")
    amount = payload.get("amount")
    if (
        not isinstance(amount, int | float)
        or isinstance(amount, bool)
        or not math.isfinite(amount)
        or amount <= 0
    ):
        raise VerificationFailed(f"{where} has an invalid amount")
    for key in ("id", "request", "unit"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            raise VerificationFailed(f"{where} has no {key}")
    if not isinstance(payload.get("round"), int) or isinstance(payload.get("round"), bool):
        raise VerificationFailed(f"{where} has no round")
    _check_issued(payload.get("issued"), where)
    return payload


def verify_receipt_chain(
    receipts: Sequence[str],
    org_did: str,
    person_did: str,
    terms: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Verify one (organization, person) chain in seq order; return the payloads.

    Raises VerificationFailed on a bad signature, a receipt for someone else, a gap or
    reordering in ``seq``, a ``prev`` that is not the previous receipt's hash, a repeated id,
    or — when ``terms`` maps request ids to their ``reward`` terms — an amount that does not
    follow them (each receipt pays ``per_update`` except a last one that lands exactly on
    ``cap``; a request's total never exceeds ``cap``; the unit matches). A receipt missing at
    the END of the chain is not visible here; compare the count with the exchange's.
    """
    payloads: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    prev: str | None = None
    paid: dict[str, list[float]] = {}
    for index, token in enumerate(receipts):
        try:
            _, payload = verify_credential(token, "RewardReceipt", expected_did=org_did)
        except VerificationFailed as exc:
            raise VerificationFailed(f"receipt {index}: {exc}") from None
        _check_payload(payload, index, org_did, person_did)
        if payload.get("seq") != index:
            raise VerificationFailed(
                f"receipt {index} has seq {payload.get('seq')!r}: a receipt is missing or "
                "out of order"
            )
        if payload.get("prev") != prev:
            raise VerificationFailed(f"receipt {index} does not chain to the previous receipt")
        if payload["id"] in seen_ids:
            raise VerificationFailed(f"receipt {index} repeats id {payload['id']}")
        seen_ids.add(payload["id"])
        if terms is not None:
            _check_terms(payload, index, terms, paid.setdefault(payload["request"], []))
        payloads.append(payload)
        prev = receipt_hash(token)
    return payloads


def _check_terms(
    payload: dict[str, Any], index: int, terms: Mapping[str, Mapping[str, Any]], paid: list[float]
) -> None:
    reward = terms.get(payload["request"])
    if reward is None:
        raise VerificationFailed(f"receipt {index} is for an unknown request")
    if payload["unit"] != reward["unit"]:
        raise VerificationFailed(f"receipt {index} pays in {payload['unit']}, not {reward['unit']}")
    expected = next_amount(reward, paid)
    if expected is None:
        raise VerificationFailed(f"receipt {index} pays beyond the cap of {reward['cap']}")
    if _dec(payload["amount"]) != _dec(expected):
        raise VerificationFailed(
            f"receipt {index} pays {payload['amount']}, the terms say {expected}"
        )
    paid.append(payload["amount"])
