"""Running approved tasks: one federated round per due task, resumable, never double-counted.

For each active consent (approved, not revoked, not expired, task not closed) a pass:

1. delivers the consent (or a revocation) to the exchange if it has not been yet;
2. asks the exchange for the open round; a round this vault already finished is skipped;
3. checks the privacy budget left before touching any data;
4. records the attempt (``task_rounds`` state ``started``), reads the consented rows through
   the consent-scoped reader (which logs each read), builds features with the request's recipe;
5. runs one DP-SGD round in the sandboxed runner with the request's settings, tightened by the
   vault's own (lower C, higher sigma, lower budget, lower delta: never looser);
6. adds ``request``, ``round``, ``consent`` (and the exchange's ``examples`` and ``epsilon``)
   to the result, signs it with the vault key, and in ONE transaction puts it in the outbox,
   marks the round ``trained`` and saves the privacy spent;
7. submits it; on acceptance the round becomes ``accepted`` and the reward receipt is verified
   and kept; on rejection ``rejected`` with the exchange's reason.

Crash safety: a vault killed before step 6 finishes left nothing that counts (no update exists,
no privacy was spent) and redoes the round; one killed after it re-sends the identical signed
update from the outbox, which the exchange answers with its first answer and receipt, and the
ledger keeps a receipt once. An exchange that is down keeps the outbox for the next pass. An
update still in the outbox when its consent is revoked is never sent.

The vault's side of this state (rounds, outbox, stored privacy, settings) is
``vault.task_state``; this module decides and talks to the runner and the exchange.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agents import runner
from agents.accounting import BudgetExceeded, PrivacyLedger
from agents.exchange.client import ExchangeError, ExchangeUnavailable
from agents.outbox import RoundReport, deliver_decisions, flush_outbox, submit
from agents.package import read_package
from agents.runner import DPConfig, effective_dp
from agents.sandbox import resolve_providers
from identity.keys import jws_sign
from vault import ledger as vault_ledger
from vault import task_state as ts
from vault.consent import (
    Consent,
    ConsentScopedReader,
    consents,
    get_request,
    mark_finished,
    request_package,
)
from vault.errors import ConsentMissing, TesseraError
from vault.recipes import get_recipe

if TYPE_CHECKING:
    from vault.core import Vault

MIN_EXAMPLES = 2


# ---------------------------------------------------------------------------- passes


def run_due_rounds(
    vault: Vault,
    client: Any,
    device: str = "auto",
    once: bool = True,
    interval: float = 30.0,
    limits: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Run every due round once (``once``) or keep watching until nothing is left to do."""
    # a device that cannot be used is the user's to fix, not a round's failure: refuse early
    resolve_providers(device)
    reports: list[dict[str, Any]] = []
    while True:
        reports.extend(r.to_dict() for r in run_pass(vault, client, device, limits, now))
        if once or (should_stop is not None and should_stop()) or not _work_left(vault, now):
            return reports
        sleep(interval)


def _work_left(vault: Vault, now: float | None) -> bool:
    return bool(ts.outbox_size(vault)) or any(c.state(now) == "active" for c in consents(vault))


def run_pass(
    vault: Vault, client: Any, device: str = "auto", limits: Any = None, now: float | None = None
) -> list[RoundReport]:
    """One pass: deliver decisions, flush the outbox, run due rounds, fetch receipts."""
    reports = deliver_decisions(vault, client)
    reports += flush_outbox(vault, client)
    for consent in consents(vault):
        if consent.state(now) != "active":
            continue
        try:
            reports.append(run_round_for(vault, client, consent, device, limits, now))
        except ExchangeUnavailable as exc:
            reports.append(RoundReport(consent.request_id, None, "offline", str(exc)))
        except ExchangeError as exc:
            reports.append(RoundReport(consent.request_id, None, "error", str(exc)))
    # receipts whose answers were lost stay at the exchange; a later pass fetches them
    with contextlib.suppress(ExchangeUnavailable, ExchangeError):
        vault_ledger.sync_receipts(vault, client)
    return reports


def _finish(vault: Vault, request_id: str, rnd: int, state: str, detail: str) -> RoundReport:
    with vault.transaction():
        ts.set_round(vault, request_id, rnd, state=state, error=detail, finished=time.time())
    return RoundReport(request_id, rnd, state, detail)


# ---------------------------------------------------------------------------- privacy


def privacy_spent(vault: Vault, consent_id: str) -> dict[str, Any]:
    """Epsilon spent so far under a consent, its budget and delta."""
    stored, budget = ts.consent_privacy(vault, consent_id)
    if stored is None:
        return {"epsilon": 0.0, "budget": budget, "delta": None}
    state = PrivacyLedger.from_dict(stored)
    return {"epsilon": state.spent(), "budget": state.budget, "delta": state.delta}


def _privacy_ledger(
    vault: Vault, consent: Consent, dp: DPConfig
) -> tuple[PrivacyLedger, DPConfig, float | None]:
    """The consent's privacy ledger (or a new one), the DP config it accounts for, last q."""
    stored, _ = ts.consent_privacy(vault, consent.id)
    if stored is None:
        return PrivacyLedger(budget=dp.epsilon_budget, delta=dp.delta), dp, None
    ledger = PrivacyLedger.from_dict(stored)
    # the budget follows today's settings; delta stays the one the steps were counted at
    ledger.budget = dp.epsilon_budget
    return ledger, dataclasses.replace(dp, delta=ledger.delta), stored.get("last_q")


def _save_privacy(vault: Vault, consent_id: str, ledger: PrivacyLedger, q: float) -> None:
    """Store the ledger and this round's sampling rate (inside the caller's transaction)."""
    ts.save_consent_privacy(vault, consent_id, {**ledger.to_dict(), "last_q": q})


def _budget_left(ledger: PrivacyLedger, dp: DPConfig, last_q: float | None) -> bool:
    """Whether one more round may fit, judged before any data is read.

    The exact check needs this round's sampling rate, which needs the data; until then the
    last round's rate stands in (the runner checks exactly again before it trains).
    """
    if ledger.spent() >= dp.epsilon_budget:
        return False
    if last_q is not None:
        return ledger.projected(last_q, dp.noise_multiplier, dp.local_steps) <= dp.epsilon_budget
    return True


def _dp_config(vault: Vault, request: Any, consent: Consent) -> DPConfig:
    asked = DPConfig(
        clip_norm=request.privacy.clip_norm,
        noise_multiplier=request.privacy.noise_multiplier,
        delta=request.privacy.delta,
        epsilon_budget=min(request.privacy.epsilon, consent.epsilon_budget),
        learning_rate=request.learning_rate,
        optimizer=request.optimizer,
        local_steps=request.local_steps,
        expected_batch_size=request.batch_size,
    )
    return effective_dp(asked, ts.privacy_settings(vault))


# ---------------------------------------------------------------------------- one round


def _read_rows(vault: Vault, consent: Consent, recipe: Any, rnd: int, now: float | None) -> dict:
    reader = ConsentScopedReader(vault, consent.id, rnd, now)
    rows = {}
    for dataset in consent.datasets:
        columns = next(
            (
                cols
                for pattern, cols in recipe.reads.items()
                if fnmatch.fnmatchcase(dataset, pattern)
            ),
            None,
        )
        if columns is not None:
            rows[dataset] = reader.read(dataset, columns)
    return rows


def run_round_for(
    vault: Vault,
    client: Any,
    consent: Consent,
    device: str = "auto",
    limits: Any = None,
    now: float | None = None,
) -> RoundReport:
    """Run the open round of one consent's task, if this vault has not done it yet."""
    request = get_request(vault, consent.request_id).request
    if not ts.consent_delivered(vault, consent.id):
        return RoundReport(request.id, None, "waiting", "consent not yet recorded at the exchange")
    info = client.current_round(request.id)
    if info["closed"]:
        mark_finished(vault, consent.id)
        return RoundReport(request.id, info.get("round"), "finished", "the task is closed")
    rnd = int(info["round"])
    state = ts.round_state(vault, request.id, rnd)
    if state in ts.DONE_STATES:
        return RoundReport(request.id, rnd, "done", f"round {rnd} already {state}")
    ledger, dp, last_q = _privacy_ledger(vault, consent, _dp_config(vault, request, consent))
    if not _budget_left(ledger, dp, last_q):
        # checked before any data is read: an exhausted budget reads nothing
        ts.start_round(vault, request.id, rnd, consent.id)
        return _finish(vault, request.id, rnd, "budget", "the privacy budget is used up")
    ts.start_round(vault, request.id, rnd, consent.id)
    recipe = get_recipe(request.recipe)
    try:
        rows = _read_rows(vault, consent, recipe, rnd, now)
    except ConsentMissing as exc:
        return _finish(vault, request.id, rnd, "withdrawn", str(exc))
    features = recipe.build(rows, request.fields, request.label)
    if len(features) < MIN_EXAMPLES:
        return _finish(vault, request.id, rnd, "empty", "too few examples in the consented data")
    package = read_package(request_package(vault, request.id))
    params = client.round_params(request.id)
    dp = dataclasses.replace(dp, expected_batch_size=min(request.batch_size, len(features)))
    q = dp.expected_batch_size / len(features)
    try:
        outcome = runner.run_round(
            package.task,
            package.model_bytes,
            params,
            package.address,
            features.x,
            features.y,
            dp,
            ledger,
            limits=limits,
            device=device,
            round_index=rnd,
        )
    except BudgetExceeded as exc:
        with vault.transaction():
            _save_privacy(vault, consent.id, ledger, q)  # so the next round reads nothing
        return _finish(vault, request.id, rnd, "budget", str(exc))
    except TesseraError as exc:
        return _finish(vault, request.id, rnd, "failed", str(exc))
    result = outcome.result
    payload = result.to_payload()
    payload.update(
        request=request.id,
        round=rnd,
        consent=consent.id,
        examples=max(1, result.examples_used),
        epsilon=result.epsilon_round,
    )
    update = jws_sign(vault.signing_key(), payload)
    with vault.transaction():
        ts.queue_update(vault, request.id, rnd, update)
        ts.set_round(
            vault,
            request.id,
            rnd,
            state="trained",
            rows=sum(len(r) for r in rows.values()),
            examples=result.examples_used,
            epsilon=result.epsilon_round,
            update_hash=hashlib.sha256(update.encode("ascii")).hexdigest(),
        )
        _save_privacy(vault, consent.id, ledger, q)
    report = submit(vault, client, request.id, rnd, update)
    report.epsilon = result.epsilon_round
    return report
