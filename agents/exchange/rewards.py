"""Reward receipts: credentials issued with the organization's key, hash-chained per (org, person).

Each receipt is a W3C verifiable credential in VC-JWT form (``identity.vc_jwt``). Its ``seq``
counts from 0 for each (organization, person) pair across all of that organization's
requests, and ``prev`` is the SHA-256 hex of the previous receipt's compact token string,
so a removed, reordered or altered receipt breaks the chain. Amounts follow the request terms:
``per_update`` per accepted update, and at most ``cap`` per person and request (the receipt
that reaches the cap carries only the remainder). Sums use decimal arithmetic on the shortest
float representation, so 0.1 + 0.2 reaches a cap of 0.3 exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agents.exchange import format_time

# the chain check is the person's credential check (identity); re-exported for the exchange side
from identity.receipts import next_amount, receipt_hash, verify_receipt_chain  # noqa: F401
from identity.vc_jwt import issue_credential
from vault.errors import TesseraError


class SignerMissing(TesseraError):
    """The exchange holds no usable signing key for the organization that owes a receipt."""


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def total(amounts: Iterable[float]) -> float:
    """Exact decimal sum of amounts, as a float."""
    return float(sum((_dec(a) for a in amounts), Decimal(0)))


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
    """A reward receipt VC-JWT issued with ``org_jwk`` (the caller supplies ``seq``/``prev``)."""
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
    return issue_credential(org_jwk, payload)


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


def totals(payloads: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Exact totals keyed by (organization, request, unit)."""
    sums: dict[tuple[str, str, str], Decimal] = {}
    for p in payloads:
        key = (p["organization"], p["request"], p["unit"])
        sums[key] = sums.get(key, Decimal(0)) + _dec(p["amount"])
    return {key: float(value) for key, value in sums.items()}
