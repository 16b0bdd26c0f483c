"""Running due rounds: real runner and recipes, a small in-test exchange for faults.

The exchange here is a stand-in that keeps the contract of ``agents.exchange`` (idempotent
re-sends, one update per vault per round, hash-chained receipts) and can be made to fail on
cue: down, losing an answer, refusing, or sending a forged receipt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents import rounds
from agents.exchange.client import ExchangeError, ExchangeUnavailable
from agents.exchange.rewards import make_receipt, next_amount, receipt_hash
from agents.package import package_address
from agents.request_check import receive_request
from identity.credentials import verify_consent, verify_revocation, verify_reward_receipt
from identity.keys import did_for, generate_key, jws_verify
from tests.fixtures.training_requests import (
    activity_export,
    new_org,
    package_bytes,
    signed_request,
)
from vault import consent as vc
from vault import ledger as vl
from vault import task_state

STEPS, HEART, SLEEP = "health.step_count", "health.heart_rate", "health.sleep_analysis"


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs, no handler catches it."""


class FakeExchange:
    """One request's exchange: rounds advance after each accepted update."""

    def __init__(self, org: str, request_id: str, rounds: int, reward: dict) -> None:
        self.org = org
        self.request_id = request_id
        self.rounds = rounds
        self.reward = reward
        self.round = 0
        self.params = {"w": np.zeros(6, np.float32), "b": np.zeros(1, np.float32)}
        self.consents: dict[str, dict] = {}
        self.revoked: set[str] = set()
        self.answers: dict[str, dict] = {}  # update JWS -> first answer
        self.by_round: dict[tuple[str, int], str] = {}
        self.receipts: list[str] = []
        self.paid: list[float] = []
        self.down = False
        self.submit_down = False
        self.die_after_accept = False
        self.refuse: str | None = None
        self.forge_receipt = False
        self.calls: list[str] = []

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise ExchangeUnavailable("exchange unavailable after 1 attempts (ConnectionError)")

    def send_consent(self, jws: str) -> dict:
        self._check("send_consent")
        payload = verify_consent(jws)
        self.consents[payload["id"]] = payload
        return {"recorded": True, "id": payload["id"]}

    def send_revocation(self, jws: str) -> dict:
        self._check("send_revocation")
        payload = verify_revocation(jws)
        self.revoked.add(payload["consent"])
        return {"revoked": True}

    def current_round(self, request_id: str) -> dict:
        self._check("current_round")
        closed = self.round >= self.rounds
        return {"round": self.round, "rounds": self.rounds, "deadline": None, "closed": closed}

    def round_params(self, request_id: str) -> dict:
        self._check("round_params")
        return {k: v.copy() for k, v in self.params.items()}

    def submit_update(self, request_id: str, update: str) -> dict:
        self._check("submit_update")
        if self.submit_down:
            raise ExchangeUnavailable("exchange unavailable (ReadTimeout)")
        if update in self.answers:
            return self.answers[update]
        person, payload = jws_verify(update)
        if self.refuse:
            raise ExchangeError(f"exchange refused: {self.refuse}", 422)
        if payload["consent"] not in self.consents or payload["consent"] in self.revoked:
            raise ExchangeError("exchange refused: no active consent", 403)
        if payload["round"] != self.round:
            raise ExchangeError("exchange refused: not the open round", 409)
        if (person, payload["round"]) in self.by_round:
            raise ExchangeError("exchange refused: duplicate update", 409)
        self.by_round[(person, payload["round"])] = update
        amount = next_amount(self.reward, self.paid)
        receipt = None
        if amount is not None:
            signer = generate_key() if self.forge_receipt else self.org
            receipt = make_receipt(
                signer,
                request_id=request_id,
                round_index=payload["round"],
                person=person,
                organization=verify_reward_receipt(self.receipts[0]).organization
                if self.receipts
                else did_for(self.org),
                amount=amount,
                unit=self.reward["unit"],
                seq=len(self.receipts),
                prev=receipt_hash(self.receipts[-1]) if self.receipts else None,
            )
            if not self.forge_receipt:
                self.receipts.append(receipt)
                self.paid.append(amount)
        answer = {"accepted": True, "receipt": receipt, "round": payload["round"]}
        self.answers[update] = answer
        self.round += 1
        if self.die_after_accept:
            self.die_after_accept = False
            raise Killed()
        return answer

    def rewards(self) -> list[str]:
        self._check("rewards")
        return list(self.receipts)


@pytest.fixture
def setup(vault, tmp_path: Path):
    """A vault with 40 days of activity, one approved request, and its exchange."""
    vault.import_path(activity_export(tmp_path / "export.xml", days=40))
    org = new_org()
    package = package_bytes(tmp_path)
    request, _ = receive_request(vault, signed_request(org, package_address(package)), package, "t")
    exchange = FakeExchange(org, request.id, request.rounds, dict(request.payload["reward"]))
    return vault, request, exchange


def _reads(vault, dataset):
    return [e for e in vault.log.entries(dataset) if e["action"] == "read"]


def _run(vault, exchange, **kwargs):
    return rounds.run_due_rounds(vault, exchange, device="cpu", **kwargs)


def test_an_approved_task_trains_submits_and_keeps_the_receipt(setup):
    vault, request, exchange = setup
    consent = vc.approve(vault, request.id, [STEPS, HEART, SLEEP])
    reports = _run(vault, exchange)
    assert [(r["round"], r["state"]) for r in reports] == [(0, "accepted")]
    assert exchange.consents.keys() == {consent.id}
    signer, update = jws_verify(exchange.by_round[(vault.did, 0)])
    assert signer == vault.did
    assert (update["request"], update["round"], update["consent"]) == (request.id, 0, consent.id)
    assert update["examples"] >= 1 and update["epsilon"] > 0
    for name in (STEPS, HEART, SLEEP):
        (entry,) = _reads(vault, name)
        assert entry["purpose"].endswith("(round 1)") and entry["task"] == request.id
    book = vl.ledger(vault)
    assert book["by_task"][0]["total"] == 0.5 and book["by_organization"][0]["name"] == "Sleep Lab"
    assert vl.verify_ledger(vault)["ok"] and vault.verify()["ok"]


def test_a_finished_round_is_not_run_twice_and_rounds_follow_the_exchange(setup):
    vault, request, exchange = setup
    vc.approve(vault, request.id)
    _run(vault, exchange)
    exchange.round = 0  # the exchange has not moved on: nothing to do
    assert [r["state"] for r in _run(vault, exchange)] == ["done"]
    assert len(_reads(vault, STEPS)) == 1
    exchange.round = 1
    _run(vault, exchange)
    exchange.round = 2
    _run(vault, exchange)
    assert [r["state"] for r in _run(vault, exchange)] == ["finished"]
    assert vc.list_requests(vault)[0]["status"] == "approved"
    # 0.5 + 0.5 + the 0.25 that reaches the cap of 1.25
    assert [r["amount"] for r in vl.receipts(vault)] == [0.5, 0.5, 0.25]
    assert vl.verify_ledger(vault)["ok"]
    spent = rounds.privacy_spent(vault, vc.consent_for_request(vault, request.id).id)
    assert 0 < spent["epsilon"] <= 3.0


def test_a_denied_request_is_never_read(setup):
    vault, request, exchange = setup
    vc.deny(vault, request.id)
    assert _run(vault, exchange) == []
    assert all(not _reads(vault, name) for name in (STEPS, HEART, SLEEP))
    assert exchange.calls == ["rewards"]


def test_revocation_stops_the_next_round_and_reaches_the_exchange(setup):
    vault, request, exchange = setup
    consent = vc.approve(vault, request.id)
    _run(vault, exchange)
    vc.revoke(vault, consent.id)
    assert _run(vault, exchange) == []
    assert exchange.revoked == {consent.id}
    assert len(_reads(vault, STEPS)) == 1
    assert vault.log.entries(STEPS)[-1]["action"] == "revoke"


def test_vault_settings_only_tighten_the_request(setup):
    vault, request, exchange = setup
    vc.approve(vault, request.id)
    task_state.set_privacy_settings(vault, clip_norm=0.5, noise_multiplier=4.0, epsilon_budget=2.0)
    _run(vault, exchange)
    dp = jws_verify(exchange.by_round[(vault.did, 0)])[1]["dp"]
    assert (dp["clip_norm"], dp["noise_multiplier"]) == (0.5, 4.0)
    # looser settings change nothing: the request's values stand
    task_state.set_privacy_settings(vault, clip_norm=5.0, noise_multiplier=0.5, epsilon_budget=50.0)
    _run(vault, exchange)
    payload = jws_verify(exchange.by_round[(vault.did, 1)])[1]
    assert (payload["dp"]["clip_norm"], payload["dp"]["noise_multiplier"]) == (1.0, 3.0)
    assert payload["privacy"]["epsilon_budget"] == 3.0
    with pytest.raises(Exception, match="positive"):
        task_state.set_privacy_settings(vault, clip_norm=-1.0)


def test_an_exchange_that_is_down_keeps_the_outbox_and_nothing_is_lost(setup):
    vault, request, exchange = setup
    vc.approve(vault, request.id)
    exchange.down = True
    assert {r["state"] for r in _run(vault, exchange)} == {"offline", "waiting"}
    assert not _reads(vault, STEPS)  # the round was not even started
    exchange.down = False
    exchange.submit_down = True
    assert [r["state"] for r in _run(vault, exchange)] == ["queued"]
    assert task_state.task_rounds(vault)[0]["state"] == "trained"
    exchange.submit_down = False
    reports = _run(vault, exchange)
    # the queued round 0 goes out first; the exchange then opens round 1, which runs too
    assert [(r["round"], r["state"]) for r in reports] == [(0, "accepted"), (1, "accepted")]
    assert [r["round"] for r in vl.receipts(vault)] == [0, 1]
    assert len(_reads(vault, STEPS)) == 2


def test_a_vault_killed_mid_round_redoes_it_without_counting_twice(setup, monkeypatch):
    import agents.runner

    vault, request, exchange = setup
    consent = vc.approve(vault, request.id)
    real = agents.runner.run_round

    def dies(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(agents.runner, "run_round", dies)
    with pytest.raises(Killed):
        _run(vault, exchange)
    assert task_state.task_rounds(vault)[0]["state"] == "started"
    assert rounds.privacy_spent(vault, consent.id)["epsilon"] == 0.0  # nothing left the vault
    monkeypatch.setattr(agents.runner, "run_round", real)
    assert [r["state"] for r in _run(vault, exchange)] == ["accepted"]
    (row,) = task_state.task_rounds(vault)
    assert (row["state"], row["attempts"]) == ("accepted", 2)
    assert len(_reads(vault, STEPS)) == 2  # both reads happened and both are on record
    steps = sum(r["steps"] for r in _ledger_records(vault, consent.id))
    assert steps == request.local_steps  # privacy counted for one round only


def _ledger_records(vault, consent_id):
    import json

    row = vault.conn.execute("SELECT privacy FROM consents WHERE id = ?", (consent_id,)).fetchone()
    return json.loads(row[0])["records"]


def test_a_vault_killed_after_submitting_resends_the_same_update_once(setup):
    vault, request, exchange = setup
    consent = vc.approve(vault, request.id)
    exchange.die_after_accept = True
    with pytest.raises(Killed):
        _run(vault, exchange)
    assert task_state.task_rounds(vault)[0]["state"] == "trained"  # the answer never arrived
    exchange.round = 0  # still round 0 from this vault's point of view
    reports = _run(vault, exchange)
    assert reports[0]["state"] == "accepted"
    assert len(exchange.by_round) == 1 and len(exchange.receipts) == 1
    assert len(vl.receipts(vault)) == 1
    assert _ledger_records(vault, consent.id)[0]["steps"] == request.local_steps
    assert vl.verify_ledger(vault)["ok"]


def test_a_refused_update_is_rejected_with_the_reason(setup):
    vault, request, exchange = setup
    vc.approve(vault, request.id)
    exchange.refuse = "update norm 12.3 is over max_update_norm 10"
    (report,) = _run(vault, exchange)
    assert report["state"] == "rejected" and "max_update_norm" in report["detail"]
    assert vault.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_a_forged_receipt_is_refused_and_reported(setup):
    vault, request, exchange = setup
    vc.approve(vault, request.id)
    exchange.forge_receipt = True
    (report,) = _run(vault, exchange)
    assert report["state"] == "accepted" and report["detail"].startswith("receipt refused")
    assert vl.receipts(vault) == []
    assert not vl.verify_ledger(vault)["ok"]


def test_an_update_queued_when_consent_is_revoked_is_withdrawn(setup):
    vault, request, exchange = setup
    consent = vc.approve(vault, request.id)
    exchange.submit_down = True
    _run(vault, exchange)
    vc.revoke(vault, consent.id)
    exchange.submit_down = False
    reports = _run(vault, exchange)
    assert [r["state"] for r in reports] == ["withdrawn"]
    assert exchange.by_round == {}


def test_a_budget_too_small_for_a_round_reads_once_then_never(setup):
    vault, request, exchange = setup
    vc.approve(vault, request.id, epsilon_budget=0.01)
    (report,) = _run(vault, exchange)
    assert report["state"] == "budget" and exchange.by_round == {}
    exchange.round = 1
    (report,) = _run(vault, exchange)
    assert report["state"] == "budget"
    assert len(_reads(vault, STEPS)) == 1  # the second round was refused before any read


def test_an_unusable_device_is_refused_before_anything_runs(setup):
    import onnxruntime

    from agents.runner import TaskFailed

    vault, request, exchange = setup
    vc.approve(vault, request.id)
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TaskFailed, match="gpu"):
        rounds.run_due_rounds(vault, exchange, device="gpu")
    assert exchange.calls == [] and not _reads(vault, STEPS)
