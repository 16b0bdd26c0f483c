"""Requests, consent receipts, revocations and reward receipts: what verifies and what not."""

from __future__ import annotations

import time

import pytest

from identity.credentials import (
    check_receipt_chains,
    issue_consent,
    issue_revocation,
    token_hash,
    verify_consent,
    verify_request,
    verify_revocation,
    verify_reward_receipt,
)
from identity.keys import b64url, b64url_decode, did_for, generate_key, jws_sign
from identity.summary import plain_summary, privacy_words
from tests.fixtures.training_requests import request_payload, signed_request
from vault.errors import VerificationFailed

ADDRESS = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def org() -> str:
    return generate_key()


@pytest.fixture(scope="module")
def person() -> str:
    return generate_key()


# ------------------------------------------------------------------------------ requests


def test_a_valid_request_verifies_into_a_typed_request(org):
    request = verify_request(signed_request(org, ADDRESS))
    assert request.issuer == did_for(org)
    assert request.recipe == "daily_activity" and request.label == "sleep_hours"
    assert request.privacy.epsilon == 3.0 and request.reward.unit == "EUR"
    assert request.datasets[0] == "health.step_count"
    assert len(request.hash) == 64


def _flip(token: str, part: int, index: int = 5) -> str:
    pieces = token.split(".")
    raw = bytearray(b64url_decode(pieces[part]))
    raw[index] ^= 0x01
    pieces[part] = b64url(bytes(raw))
    return ".".join(pieces)


@pytest.mark.parametrize("part", [1, 2])
def test_a_request_changed_by_one_byte_is_refused(org, part):
    token = _flip(signed_request(org, ADDRESS), part)
    with pytest.raises(VerificationFailed, match="training request"):
        verify_request(token)


def test_a_request_with_a_changed_field_and_the_old_signature_is_refused(org):
    token = signed_request(org, ADDRESS)
    header, payload, signature = token.split(".")
    changed = b64url_decode(payload).replace(b'"epsilon":3.0', b'"epsilon":9.0')
    assert changed != b64url_decode(payload)
    with pytest.raises(VerificationFailed, match="bad signature"):
        verify_request(f"{header}.{b64url(changed)}.{signature}")


def test_a_request_signed_by_another_key_than_its_issuer_is_refused(org):
    mallory = generate_key()
    token = jws_sign(mallory, request_payload(org, ADDRESS))  # claims org as issuer
    with pytest.raises(VerificationFailed, match="signed by"):
        verify_request(token)


def test_an_expired_request_is_refused(org):
    token = signed_request(
        org, ADDRESS, issued="2024-01-01T00:00:00Z", expires="2024-02-01T00:00:00Z"
    )
    with pytest.raises(VerificationFailed, match="expired"):
        verify_request(token)
    # still readable for the history, when the caller asks for that explicitly
    assert verify_request(token, allow_expired=True).expired()


def test_a_request_issued_in_the_future_is_refused(org):
    token = signed_request(
        org, ADDRESS, issued="2099-01-01T00:00:00Z", expires="2099-02-01T00:00:00Z"
    )
    with pytest.raises(VerificationFailed, match="future"):
        verify_request(token)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"type": "Something"}, "not a training request"),
        ({"id": "req-1"}, "request.id"),
        ({"package": "md5:abc"}, "package"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": True}, "rounds"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"datasets": []}, "no datasets"),
        ({"datasets": ["Health Steps"]}, "dataset name"),
        ({"time_range": {"from": "2024-02-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"}}, "ends"),
        (
            {"privacy": {"epsilon": -1, "delta": 1e-5, "clip_norm": 1, "noise_multiplier": 1}},
            "epsilon",
        ),
        ({"recipe": "raw_rows"}, "unknown feature recipe"),
        ({"label": "home_address"}, "no label"),
        ({"datasets": ["location.points"]}, "does not read"),
        ({"fields": ["steps", "password"]}, "no field"),
        ({"organization": "Acme"}, "organization"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(org, overrides, reason):
    with pytest.raises(VerificationFailed, match=reason):
        verify_request(signed_request(org, ADDRESS, **overrides))


def test_not_a_jws_is_refused():
    for token in ("", "a.b", "x" * 100_000, 42):
        with pytest.raises(VerificationFailed):
            verify_request(token)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ summary


def test_plain_summary_says_who_why_what_and_the_privacy_in_words(org):
    request = verify_request(signed_request(org, ADDRESS))
    summary = plain_summary(request)
    assert summary["who"].startswith("Sleep Lab (did:key:")
    assert "signature verified" in summary["who"]
    assert summary["why"] == "Learn how daily activity relates to sleep."
    assert summary["data"] == ["your step counts", "your heart rate", "your sleep"]
    assert "2023-12-01 to 2024-12-31" in summary["time_range"]
    assert summary["privacy"].startswith(
        "Your data stays on this computer. Only a noisy model update leaves, with a privacy"
        " guarantee of ε = 3 (δ = 1e-05)"
    )
    assert "0.5 EUR for each accepted round" in summary["reward"]
    assert "at most 1.25 EUR" in summary["reward"]
    assert not summary["warnings"]
    unverified = plain_summary(request, verified=False)
    assert "NOT VERIFIED" in unverified["who"] and unverified["warnings"]


def test_privacy_words_grade_epsilon():
    assert "strong" in privacy_words(0.5, 1e-6)
    assert "weak" in privacy_words(20, 1e-5)


# ------------------------------------------------------------------------------ consent


def test_consent_receipt_round_trip_and_binding_to_the_request(org, person):
    request = verify_request(signed_request(org, ADDRESS))
    expires = time.time() + 86_400
    jws, payload = issue_consent(person, request, ["health.step_count"], 1.5, expires)
    checked = verify_consent(jws, did_for(person), request)
    assert checked["request_hash"] == token_hash(request.jws)
    assert checked["subject"] == did_for(person) and checked["epsilon_budget"] == 1.5
    other = verify_request(signed_request(org, ADDRESS))
    with pytest.raises(VerificationFailed, match="different request"):
        verify_consent(jws, did_for(person), other)
    with pytest.raises(VerificationFailed):
        verify_consent(jws, did_for(org))  # expected another signer
    with pytest.raises(VerificationFailed):
        verify_consent(_flip(jws, 1))


def test_revocation_round_trip(person):
    token = issue_revocation(person, "consent-" + "0" * 32)
    assert verify_revocation(token, did_for(person))["consent"] == "consent-" + "0" * 32
    with pytest.raises(VerificationFailed):
        verify_revocation(_flip(token, 2))


# ------------------------------------------------------------------------------ rewards


def _chain(org: str, person: str, amounts: list[float], request: str = "req-" + "1" * 32):
    from agents.exchange.rewards import make_receipt, receipt_hash

    receipts, prev = [], None
    for seq, amount in enumerate(amounts):
        token = make_receipt(
            org,
            request_id=request,
            round_index=seq,
            person=did_for(person),
            organization=did_for(org),
            amount=amount,
            unit="EUR",
            seq=seq,
            prev=prev,
        )
        receipts.append(token)
        prev = receipt_hash(token)
    return receipts


TERMS = {"req-" + "1" * 32: {"per_update": 0.5, "unit": "EUR", "cap": 1.25}}


def test_a_good_chain_verifies_including_the_capped_last_receipt(org, person):
    receipts = [
        verify_reward_receipt(t, did_for(person)) for t in _chain(org, person, [0.5, 0.5, 0.25])
    ]
    assert check_receipt_chains(receipts, TERMS) == []


def test_a_missing_receipt_is_detected(org, person):
    tokens = _chain(org, person, [0.5, 0.5, 0.25])
    receipts = [verify_reward_receipt(t, did_for(person)) for t in (tokens[0], tokens[2])]
    assert any("missing" in p for p in check_receipt_chains(receipts, TERMS))


def test_amounts_that_do_not_add_up_to_the_terms_are_refused(org, person):
    receipts = [verify_reward_receipt(t, did_for(person)) for t in _chain(org, person, [0.5, 0.4])]
    assert any("terms" in p for p in check_receipt_chains(receipts, TERMS))
    full = [verify_reward_receipt(t, did_for(person)) for t in _chain(org, person, [0.5] * 3)]
    assert any("terms say 0.25" in p for p in check_receipt_chains(full, TERMS))
    over = _chain(org, person, [0.5, 0.5, 0.25, 0.5])
    over_receipts = [verify_reward_receipt(t, did_for(person)) for t in over]
    assert any("beyond the cap" in p for p in check_receipt_chains(over_receipts, TERMS))


def test_a_forged_or_foreign_receipt_is_refused(org, person):
    token = _chain(org, person, [0.5])[0]
    with pytest.raises(VerificationFailed, match="someone else"):
        verify_reward_receipt(token, did_for(generate_key()))
    with pytest.raises(VerificationFailed):
        verify_reward_receipt(_flip(token, 1), did_for(person))
    # a receipt signed by a key other than the organization it names
    forged = _chain(generate_key(), person, [0.5])[0]
    with pytest.raises(VerificationFailed):
        verify_reward_receipt(forged, did_for(person), organization=did_for(org))
