"""The rewards ledger: signed reward receipts kept, verified, and totalled.

A receipt is stored only when it verifies on its own: signed by the organization it names,
for this vault's DID, for a task this vault joined and a round it sent an update for, in the
task's unit and within its terms. Storing is idempotent (a receipt seen again is a no-op), and
a second, different receipt for the same round or the same chain position is refused, so a
replayed or forged receipt can never count twice. Whole chains (seq from 0, each ``prev`` the
hash of the one before, amounts exactly as the terms say) are checked by :func:`verify_ledger`,
since receipts may arrive out of order when an answer was lost and the update re-sent.
"""

from __future__ import annotations

import time
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from identity.credentials import (
    RewardReceipt,
    check_receipt_chains,
    verify_request,
    verify_reward_receipt,
)
from vault.errors import VerificationFailed
from vault.timeparse import iso_utc

if TYPE_CHECKING:
    from vault.core import Vault


def _dec(value: float) -> Decimal:
    # the shortest repr, so that 0.1 + 0.2 adds up to 0.3 as the exchange counts it
    return Decimal(repr(float(value)))


def _terms(vault: Vault, request_id: str) -> tuple[str, dict[str, Any]] | None:
    row = vault.conn.execute("SELECT jws FROM requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        return None
    request = verify_request(row[0], allow_expired=True)
    return request.issuer, dict(request.payload["reward"])


def store_receipt(vault: Vault, jws: str, now: float | None = None) -> tuple[RewardReceipt, bool]:
    """Verify and keep a receipt (call inside a transaction); return (receipt, newly stored)."""
    receipt = verify_reward_receipt(jws.strip(), person=vault.did)
    conn = vault.conn
    known = conn.execute("SELECT hash FROM receipts WHERE id = ?", (receipt.id,)).fetchone()
    if known is not None:
        if known[0] != receipt.hash:
            raise VerificationFailed(f"receipt {receipt.id} differs from the one already kept")
        return receipt, False
    found = _terms(vault, receipt.request)
    if found is None:
        raise VerificationFailed(f"receipt for task {receipt.request}, which this vault never saw")
    issuer, terms = found
    if issuer != receipt.organization:
        raise VerificationFailed("receipt is signed by another organization than the task's")
    sent = conn.execute(
        "SELECT state FROM task_rounds WHERE request_id = ? AND round = ?",
        (receipt.request, receipt.round),
    ).fetchone()
    if sent is None or sent[0] not in ("trained", "accepted"):
        raise VerificationFailed(
            f"receipt for round {receipt.round} of {receipt.request}, for which this vault"
            " sent no update"
        )
    clash = conn.execute(
        "SELECT id FROM receipts WHERE (request_id = ? AND round = ?)"
        " OR (organization = ? AND person = ? AND seq = ?)",
        (receipt.request, receipt.round, receipt.organization, receipt.person, receipt.seq),
    ).fetchone()
    if clash is not None:
        raise VerificationFailed(
            f"a different receipt for round {receipt.round} (or seq {receipt.seq}) is already kept"
        )
    _check_terms(vault, receipt, terms)
    conn.execute(
        "INSERT INTO receipts (id, hash, jws, organization, person, request_id, round, amount,"
        " unit, seq, prev, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            receipt.id,
            receipt.hash,
            receipt.jws,
            receipt.organization,
            receipt.person,
            receipt.request,
            receipt.round,
            receipt.amount,
            receipt.unit,
            receipt.seq,
            receipt.prev,
            time.time() if now is None else now,
        ),
    )
    conn.execute(
        "UPDATE task_rounds SET receipt_id = ? WHERE request_id = ? AND round = ?",
        (receipt.id, receipt.request, receipt.round),
    )
    return receipt, True


def _check_terms(vault: Vault, receipt: RewardReceipt, terms: dict[str, Any]) -> None:
    if receipt.unit != terms["unit"]:
        raise VerificationFailed(f"receipt pays in {receipt.unit}, the terms in {terms['unit']}")
    paid = sum(
        (
            _dec(r[0])
            for r in vault.conn.execute(
                "SELECT amount FROM receipts WHERE request_id = ?", (receipt.request,)
            )
        ),
        Decimal(0),
    )
    amount, per_update, cap = _dec(receipt.amount), _dec(terms["per_update"]), _dec(terms["cap"])
    if paid + amount > cap:
        raise VerificationFailed(f"receipt would take the total over the cap of {terms['cap']:g}")
    # each update earns per_update, except the one that lands exactly on the cap
    if amount != per_update and paid + amount != cap:
        raise VerificationFailed(
            f"receipt pays {receipt.amount:g}, the terms say {terms['per_update']:g} per update"
        )


def add_receipt(vault: Vault, jws: str, now: float | None = None) -> tuple[RewardReceipt, bool]:
    """Verify and keep one receipt in its own transaction."""
    with vault.transaction():
        return store_receipt(vault, jws, now)


def sync_receipts(vault: Vault, client: Any) -> dict[str, Any]:
    """Fetch every receipt the exchange holds for this vault and keep the new ones."""
    added, refused = 0, []
    for token in client.rewards():
        try:
            _, new = add_receipt(vault, token)
            added += new
        except VerificationFailed as exc:
            refused.append(str(exc))
    return {"added": added, "refused": refused}


def receipts(vault: Vault) -> list[dict[str, Any]]:
    """Every kept receipt, by organization and seq."""
    rows = vault.conn.execute(
        "SELECT id, organization, request_id, round, amount, unit, seq, received FROM receipts"
        " ORDER BY organization, seq"
    ).fetchall()
    return [
        {
            "id": rid,
            "organization": org,
            "request": req,
            "round": rnd,
            "amount": amount,
            "unit": unit,
            "seq": seq,
            "received": iso_utc(received),
        }
        for rid, org, req, rnd, amount, unit, seq, received in rows
    ]


def ledger(vault: Vault) -> dict[str, Any]:
    """Receipts with totals per organization and per task (exact decimal sums)."""
    kept = receipts(vault)
    names = _organization_names(vault)
    by_org: dict[tuple[str, str], list[Decimal]] = defaultdict(list)
    by_task: dict[tuple[str, str, str], list[Decimal]] = defaultdict(list)
    for r in kept:
        by_org[(r["organization"], r["unit"])].append(_dec(r["amount"]))
        by_task[(r["request"], r["organization"], r["unit"])].append(_dec(r["amount"]))
    return {
        "receipts": kept,
        "by_organization": [
            {
                "organization": org,
                "name": names.get(org),
                "unit": unit,
                "total": float(sum(amounts, Decimal(0))),
                "receipts": len(amounts),
            }
            for (org, unit), amounts in sorted(by_org.items())
        ],
        "by_task": [
            {
                "request": req,
                "organization": org,
                "name": names.get(org),
                "unit": unit,
                "total": float(sum(amounts, Decimal(0))),
                "receipts": len(amounts),
            }
            for (req, org, unit), amounts in sorted(by_task.items())
        ],
    }


def _organization_names(vault: Vault) -> dict[str, str]:
    names = {}
    for (jws,) in vault.conn.execute("SELECT jws FROM requests"):
        request = verify_request(jws, allow_expired=True)
        names[request.issuer] = request.organization
    return names


def verify_ledger(vault: Vault) -> dict[str, Any]:
    """Re-verify every receipt and every chain against the tasks' terms."""
    problems: list[str] = []
    checked: list[RewardReceipt] = []
    for (jws,) in vault.conn.execute("SELECT jws FROM receipts ORDER BY organization, seq"):
        try:
            checked.append(verify_reward_receipt(jws, person=vault.did))
        except VerificationFailed as exc:
            problems.append(str(exc))
    terms = {}
    for receipt in checked:
        found = _terms(vault, receipt.request)
        if found is None:
            problems.append(f"receipt {receipt.id} is for an unknown task")
        elif found[0] != receipt.organization:
            problems.append(f"receipt {receipt.id} is signed by another organization")
        else:
            terms[receipt.request] = found[1]
    problems.extend(check_receipt_chains(checked, terms))
    # an accepted round whose receipt was refused on arrival (tasks records why)
    missing = vault.conn.execute(
        "SELECT request_id, round, error FROM task_rounds"
        " WHERE state = 'accepted' AND receipt_id IS NULL AND error IS NOT NULL"
    ).fetchall()
    problems.extend(f"round {r} of {q}: {error}" for q, r, error in missing)
    return {"ok": not problems, "receipts": len(checked), "problems": problems}
