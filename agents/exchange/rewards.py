"""Reward receipts: signed by the organization's key, hash-chained per (organization, person).

Receipt ``seq`` counts from 0 for each (organization, person) pair across all of that
organization's requests, and ``prev`` is the SHA-256 hex of the previous receipt's JWS string,
so a removed, reordered or altered receipt breaks the chain. Amounts follow the request terms:
``per_update`` per accepted update, and at most ``cap`` per person and request (the receipt
that reaches the cap carries only the remainder). Sums use decimal arithmetic on the shortest
float representation, so 0.1 + 0.2 reaches a cap of 0.3 exactly.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agents.exchange import MessageRefused, format_time, parse_time
from identity.keys import jws_sign, jws_verify
from vault.errors import TesseraError, VerificationFailed


class SignerMissing(TesseraError):
    """The exchange holds no usable signing key for the organization that owes a receipt."""


def receipt_hash(receipt_jws: str) -> str:
    """SHA-256 hex of a receipt's JWS string: what the next receipt's ``prev`` holds."""
    return hashlib.sha256(receipt_jws.encode("ascii")).hexdigest()


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def total(amounts: Iterable[float]) -> float:
    """Exact decimal sum of amounts, as a float."""
    return float(sum((_dec(a) for a in amounts), Decimal(0)))


def next_amount(reward: Mapping[str, Any], paid: Iterable[float]) -> float | None:
    """What the next accepted update earns under ``reward`` terms; None once the cap is reached."""
    remaining = _dec(reward["cap"]) - sum((_dec(a) for a in paid), Decimal(0))
    amount = min(_dec(reward["per_update"]), remaining)
    return float(amount) if amount > 0 else None


def make_receipt(
    org_jwk: str,
    *,
    request_id: str,
    round_index: int,
    person: str,
    organization: str,
    amount: float,
    unit: str,
    seq: int,
    prev: str | None,
    issued: datetime | None = None,
    receipt_id: str | None = None,
) -> str:
    """A signed reward receipt JWS (the caller supplies the chain position ``seq``/``prev``)."""
    payload = {
        "type": "RewardReceipt",
        "id": receipt_id or f"reward-{uuid.uuid4().hex}",
        "request": request_id,
        "round": round_index,
        "person": person,
        "organization": organization,
        "amount": float(amount),
        "unit": unit,
        "issued": format_time(issued or datetime.now(UTC)),
        "seq": seq,
        "prev": prev,
    }
    return jws_sign(org_jwk, payload)


def issue_receipt(
    tx: Any,
    org_key: Callable[[Any, str], str | None],
    request: Mapping[str, Any],
    person: str,
    round_index: int,
) -> str | None:
    """Sign and store the receipt an accepted update earns, inside the caller's transaction.

    Returns None once the person reached the request's cap. ``tx`` is a store transaction;
    ``org_key(tx, did)`` gives the organization's signing key.
    """
    terms = request["payload"]["reward"]
    paid = tx.all(
        "SELECT amount FROM receipts WHERE request_id = ? AND person = ?",
        (request["id"], person),
    )
    amount = next_amount(terms, [row[0] for row in paid])
    if amount is None:
        return None  # the cap is reached: the update still counts, it just earns nothing
    org = request["issuer"]
    jwk = org_key(tx, org)
    if jwk is None:
        raise SignerMissing("the organization has not handed the exchange a signing key")
    # locking the chain row serializes one (organization, person) chain across requests
    tx.execute(
        "INSERT INTO chains (organization, person) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (org, person),
    )
    tx.one(
        "SELECT 1 FROM chains WHERE organization = ? AND person = ?" + tx.for_update, (org, person)
    )
    last = tx.one(
        "SELECT seq, hash FROM receipts WHERE organization = ? AND person = ?"
        " ORDER BY seq DESC LIMIT 1",
        (org, person),
    )
    seq, prev = (last[0] + 1, last[1]) if last else (0, None)
    receipt_id = f"reward-{uuid.uuid4().hex}"
    receipt = make_receipt(
        jwk,
        request_id=request["id"],
        round_index=round_index,
        person=person,
        organization=org,
        amount=amount,
        unit=terms["unit"],
        seq=seq,
        prev=prev,
        receipt_id=receipt_id,
    )
    tx.execute(
        "INSERT INTO receipts (id, organization, person, seq, request_id, amount, jws, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (receipt_id, org, person, seq, request["id"], amount, receipt, receipt_hash(receipt)),
    )
    return receipt


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
    try:
        parse_time(payload.get("issued"), "issued")
    except MessageRefused as exc:
        raise VerificationFailed(f"{where}: {exc}") from None
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
            _, payload = jws_verify(token, expected_did=org_did)
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


def totals(payloads: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Exact totals keyed by (organization, request, unit)."""
    sums: dict[tuple[str, str, str], Decimal] = {}
    for p in payloads:
        key = (p["organization"], p["request"], p["unit"])
        sums[key] = sums.get(key, Decimal(0)) + _dec(p["amount"])
    return {key: float(value) for key, value in sums.items()}
