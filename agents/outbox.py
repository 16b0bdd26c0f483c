"""The way out of the vault: consents, revocations and signed updates to the exchange.

Updates wait in the vault's ``outbox`` table (``vault.task_state``) until the exchange
answers. An exchange that cannot be reached, or whose answer cannot be read, leaves the update
queued: re-sending the identical signed update is safe, since the exchange answers a repeat
with its first answer and receipt. A refusal (HTTP 4xx with a reason) marks the round
``rejected`` with that reason. An update whose consent was revoked while it waited is
withdrawn, never sent.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.exchange.client import ExchangeError, ExchangeUnavailable
from vault import ledger as vault_ledger
from vault import task_state as ts
from vault.errors import VerificationFailed

if TYPE_CHECKING:
    from vault.core import Vault

# a refusal with one of these statuses may be a passing problem (clock, rate limit): retry
RETRY_STATUSES = (401, 408, 429)


@dataclass
class RoundReport:
    """What a pass did for one task."""

    request: str
    round: int | None
    state: str
    detail: str = ""
    epsilon: float | None = None
    receipt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def deliver_decisions(vault: Vault, client: Any) -> list[RoundReport]:
    """Send consents and revocations the exchange has not had yet."""
    reports = []
    for cid, request_id, jws, sent, revocation in ts.undelivered_decisions(vault):
        try:
            if revocation is None:
                client.send_consent(jws)
                column = "sent"
            else:
                # a consent the exchange never had needs no revocation there
                if sent:
                    client.send_revocation(revocation)
                column = "revocation_sent"
        except ExchangeUnavailable as exc:
            reports.append(RoundReport(request_id, None, "offline", str(exc)))
            continue
        except ExchangeError as exc:
            reports.append(RoundReport(request_id, None, "error", f"consent not recorded: {exc}"))
            continue
        ts.mark_delivered(vault, cid, column)
    return reports


def submit(vault: Vault, client: Any, request_id: str, rnd: int, update: str) -> RoundReport:
    """Submit one signed update from the outbox and record the answer."""
    try:
        answer = client.submit_update(request_id, update)
    except (ExchangeUnavailable, ExchangeError) as exc:
        status = getattr(exc, "status", None)
        if isinstance(exc, ExchangeUnavailable) or status is None or status in RETRY_STATUSES:
            # unreachable, or an answer we could not read: re-sending the same update is safe
            ts.note_retry(vault, request_id, rnd, str(exc))
            return RoundReport(request_id, rnd, "queued", str(exc))
        return _rejected(vault, request_id, rnd, str(exc))
    if not answer.get("accepted"):
        return _rejected(vault, request_id, rnd, str(answer.get("error") or "not accepted"))
    receipt_id, problem = None, None
    with vault.transaction():
        ts.drop_update(vault, request_id, rnd)
        ts.set_round(vault, request_id, rnd, state="accepted", finished=time.time(), error=None)
        if answer.get("receipt"):
            try:
                receipt, _ = vault_ledger.store_receipt(vault, answer["receipt"])
                receipt_id = receipt.id
            except VerificationFailed as exc:
                problem = f"receipt refused: {exc}"
                ts.set_round(vault, request_id, rnd, error=problem)
    detail = problem or ("reward receipt kept" if receipt_id else "no reward (cap reached)")
    return RoundReport(request_id, rnd, "accepted", detail, receipt=receipt_id)


def _rejected(vault: Vault, request_id: str, rnd: int, reason: str) -> RoundReport:
    with vault.transaction():
        ts.drop_update(vault, request_id, rnd)
        ts.set_round(vault, request_id, rnd, state="rejected", error=reason, finished=time.time())
    return RoundReport(request_id, rnd, "rejected", reason)


def flush_outbox(vault: Vault, client: Any) -> list[RoundReport]:
    """Re-send every queued update; one whose consent was revoked is withdrawn, not sent."""
    reports = []
    for request_id, rnd, update, revoked in ts.queued_updates(vault):
        if revoked is not None:
            with vault.transaction():
                ts.drop_update(vault, request_id, rnd)
                ts.set_round(vault, request_id, rnd, state="withdrawn", error="consent revoked")
            reports.append(RoundReport(request_id, rnd, "withdrawn", "consent revoked; not sent"))
            continue
        reports.append(submit(vault, client, request_id, rnd, update))
    return reports
