"""The rewards ledger: which receipts are kept, totals, and whole-ledger verification."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.exchange.rewards import make_receipt, receipt_hash
from agents.package import package_address
from agents.request_check import receive_request
from identity.keys import did_for, generate_key
from tests.fixtures.training_requests import new_org, package_bytes, signed_request
from vault import consent as vc
from vault import ledger as vl
from vault.errors import VerificationFailed


class Org:
    """An organization with one approved request and its receipt chain to this vault."""

    def __init__(self, vault, tmp: Path, name: str, per_update=0.5, cap=1.25, rounds=3) -> None:
        self.jwk = new_org()
        self.did = did_for(self.jwk)
        package = package_bytes(tmp)
        token = signed_request(
            self.jwk,
            package_address(package),
            organization={"name": name},
            reward={"per_update": per_update, "unit": "EUR", "cap": cap},
            rounds=rounds,
        )
        self.request, _ = receive_request(vault, token, package, "test")
        self.consent = vc.approve(vault, self.request.id)
        self.vault = vault
        self.chain: list[str] = []

    def sent(self, rnd: int, state: str = "accepted") -> None:
        """Record that the vault sent an update for round ``rnd``."""
        with self.vault.transaction():
            self.vault.conn.execute(
                "INSERT INTO task_rounds (request_id, round, consent_id, state)"
                " VALUES (?, ?, ?, ?)",
                (self.request.id, rnd, self.consent.id, state),
            )

    def receipt(self, rnd: int, amount: float, seq: int | None = None, prev="chain", **kw) -> str:
        """The next receipt of the chain (or one with a chosen seq/prev)."""
        seq = len(self.chain) if seq is None else seq
        if prev == "chain":
            prev = receipt_hash(self.chain[-1]) if self.chain else None
        token = make_receipt(
            kw.pop("signer", self.jwk),
            request_id=kw.pop("request_id", self.request.id),
            round_index=rnd,
            person=kw.pop("person", self.vault.did),
            organization=self.did,
            amount=amount,
            unit=kw.pop("unit", "EUR"),
            seq=seq,
            prev=prev,
        )
        self.chain.append(token)
        return token


@pytest.fixture
def org(vault, tmp_path):
    return Org(vault, tmp_path, "Sleep Lab")


def test_receipts_are_kept_once_and_totalled(vault, tmp_path, org):
    other = Org(vault, tmp_path, "Walk Co", per_update=2.0, cap=10.0)
    for rnd, amount in enumerate([0.5, 0.5, 0.25]):
        org.sent(rnd)
        receipt, new = vl.add_receipt(vault, org.receipt(rnd, amount))
        assert new and receipt.amount == amount
    other.sent(0)
    vl.add_receipt(vault, other.receipt(0, 2.0))
    # the same receipt again changes nothing
    assert vl.add_receipt(vault, org.chain[0])[1] is False
    book = vl.ledger(vault)
    totals = {(t["name"], t["total"], t["receipts"]) for t in book["by_organization"]}
    assert totals == {("Sleep Lab", 1.25, 3), ("Walk Co", 2.0, 1)}
    assert {t["request"]: t["total"] for t in book["by_task"]} == {
        org.request.id: 1.25,
        other.request.id: 2.0,
    }
    assert vl.verify_ledger(vault) == {"ok": True, "receipts": 4, "problems": []}


def test_a_second_receipt_for_the_same_round_is_refused(vault, org):
    org.sent(0)
    vl.add_receipt(vault, org.receipt(0, 0.5))
    with pytest.raises(VerificationFailed, match="already kept"):
        vl.add_receipt(vault, org.receipt(0, 0.5))


def test_receipts_for_rounds_or_tasks_never_sent_are_refused(vault, org):
    with pytest.raises(VerificationFailed, match="sent no update"):
        vl.add_receipt(vault, org.receipt(0, 0.5))
    org.sent(1, state="started")  # started but never trained: nothing was sent
    with pytest.raises(VerificationFailed, match="sent no update"):
        vl.add_receipt(vault, org.receipt(1, 0.5, seq=0, prev=None))
    with pytest.raises(VerificationFailed, match="never saw"):
        vl.add_receipt(vault, org.receipt(0, 0.5, request_id="req-" + "9" * 32))
    assert vl.receipts(vault) == []


@pytest.mark.parametrize(
    ("amount", "unit", "reason"),
    [(0.7, "EUR", "terms say"), (0.5, "USD", "pays in USD"), (0.3, "EUR", "terms say")],
)
def test_receipts_off_the_terms_are_refused(vault, org, amount, unit, reason):
    org.sent(0)
    with pytest.raises(VerificationFailed, match=reason):
        vl.add_receipt(vault, org.receipt(0, amount, unit=unit))


def test_a_receipt_over_the_cap_is_refused(vault, org):
    for rnd in range(2):
        org.sent(rnd)
        vl.add_receipt(vault, org.receipt(rnd, 0.5))
    org.sent(2)
    with pytest.raises(VerificationFailed, match="over the cap"):
        vl.add_receipt(vault, org.receipt(2, 0.5))


def test_forged_and_foreign_receipts_are_refused(vault, org):
    org.sent(0)
    with pytest.raises(VerificationFailed):
        vl.add_receipt(vault, org.receipt(0, 0.5, signer=generate_key()))
    with pytest.raises(VerificationFailed, match="someone else"):
        vl.add_receipt(vault, org.receipt(0, 0.5, person=did_for(generate_key())))


def test_verify_finds_a_gap_in_the_chain(vault, org):
    org.sent(0)
    org.sent(1)
    org.receipt(0, 0.5)  # issued by the exchange but never reached the vault
    vl.add_receipt(vault, org.receipt(1, 0.5))
    report = vl.verify_ledger(vault)
    assert not report["ok"] and "missing" in report["problems"][0]


def test_verify_finds_an_altered_stored_receipt(vault, org):
    org.sent(0)
    vl.add_receipt(vault, org.receipt(0, 0.5))
    token = org.chain[0]
    head, payload, sig = token.split(".")
    with vault.transaction():
        vault.conn.execute("UPDATE receipts SET jws = ?", (f"{head}.{payload}x.{sig}",))
    assert not vl.verify_ledger(vault)["ok"]
