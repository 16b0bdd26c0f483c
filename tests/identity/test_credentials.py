"""Requests, consent receipts, revocations and reward receipts: what verifies and what not."""

from __future__ import annotations

import json
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
from identity.receipts import verify_receipt_chain
from identity.summary import plain_summary, privacy_words
from tests.fixtures.training_requests import forged_credential, request_payload, signed_request
from vault.errors import VerificationFailed

ADDRESS = "sha256:" + "ab" * 32


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
    with pytest.raises(VerificationFailed, match="training request: bad signature"):
        verify_request(f"{header}.{b64url(changed)}.{signature}")


def test_a_request_signed_by_another_key_than_its_issuer_is_refused(org):
    mallory = generate_key()
    token = forged_credential(mallory, request_payload(org, ADDRESS), did_for(org))
    with pytest.raises(VerificationFailed, match="not by its issuer"):
        verify_request(token)


def test_a_request_issued_by_another_organization_is_refused_where_one_is_expected(org):
    from identity.credentials import parse_request
    from identity.vc_jwt import verify_credential

    mallory = generate_key()
    token = signed_request(mallory, ADDRESS)  # a proper credential, but by mallory
    with pytest.raises(VerificationFailed, match="expected"):
        verify_credential(token, "TrainingRequest", expected_did=did_for(org))
    issuer, payload = verify_credential(token, "TrainingRequest", expected_did=did_for(mallory))
    assert parse_request(token, payload).issuer == issuer == did_for(mallory)


def test_a_request_in_the_old_plain_jws_form_is_refused(org):
    token = jws_sign(org, request_payload(org, ADDRESS))
    with pytest.raises(VerificationFailed, match="not a verifiable credential"):
        verify_request(token)


def test_another_kind_of_credential_is_not_a_request(person):
    token = issue_revocation(person, "consent-" + "0" * 32)
    with pytest.raises(VerificationFailed, match="not a TrainingRequest credential"):
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
    with pytest.raises(VerificationFailed, match="expected"):
        verify_consent(jws, did_for(org))  # expected another signer
    with pytest.raises(VerificationFailed, match="consent receipt"):
        verify_consent(_flip(jws, 1))


def test_a_consent_receipt_is_a_w3c_credential_about_its_subject(org, person):
    request = verify_request(signed_request(org, ADDRESS))
    jws, payload = issue_consent(person, request, ["health.step_count"], 1.5, time.time() + 60)
    claims = json.loads(b64url_decode(jws.split(".")[1]))
    vc = claims["vc"]
    assert vc["type"] == ["VerifiableCredential", "ConsentReceipt"]
    assert vc["issuer"] == claims["iss"] == vc["credentialSubject"]["id"] == did_for(person)
    assert vc["id"] == claims["jti"] == f"urn:tessera:{payload['id']}"
    assert (vc["issuanceDate"], vc["expirationDate"]) == (payload["issued"], payload["expires"])
    assert verify_consent(jws) == payload


def test_an_expired_consent_still_verifies_for_the_history(org, person):
    request = verify_request(signed_request(org, ADDRESS))
    now = time.time() - 7200
    jws, payload = issue_consent(person, request, ["health.step_count"], 1.0, now + 60, now)
    assert verify_consent(jws, did_for(person), request) == payload
    with pytest.raises(VerificationFailed, match="bad signature"):
        verify_consent(_flip(jws, 2), did_for(person), request)


def test_a_consent_forged_in_someone_elses_name_is_refused(org, person):
    request = verify_request(signed_request(org, ADDRESS))
    _, payload = issue_consent(person, request, ["health.step_count"], 1.5, time.time() + 60)
    token = forged_credential(generate_key(), payload, did_for(person))
    with pytest.raises(VerificationFailed, match="not by its issuer"):
        verify_consent(token, did_for(person), request)


def test_revocation_round_trip(person):
    token = issue_revocation(person, "consent-" + "0" * 32)
    assert verify_revocation(token, did_for(person))["consent"] == "consent-" + "0" * 32
    with pytest.raises(VerificationFailed, match="consent revocation"):
        verify_revocation(_flip(token, 2))
    with pytest.raises(VerificationFailed, match="not a ConsentRevocation credential"):
        verify_revocation(
            issue_consent(
                person,
                verify_request(signed_request(generate_key(), ADDRESS)),
                ["health.step_count"],
                1,
                time.time() + 60,
            )[0]
        )


# ------------------------------------------------------------------------------ rewards


def _receipt(
    signer: str, org_did: str, person: str, amount: float, seq: int = 0, prev: str | None = None
) -> str:
    from agents.exchange.rewards import make_receipt

    return make_receipt(
        signer,
        request_id="req-" + "1" * 32,
        round_index=seq,
        person=did_for(person),
        organization=org_did,
        amount=amount,
        unit="EUR",
        seq=seq,
        prev=prev,
    )


def _chain(org: str, person: str, amounts: list[float]):
    from agents.exchange.rewards import receipt_hash

    receipts, prev = [], None
    for seq, amount in enumerate(amounts):
        token = _receipt(org, did_for(org), person, amount, seq, prev)
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


def test_a_reordered_or_altered_receipt_breaks_the_chain(org, person):
    tokens = _chain(org, person, [0.5, 0.5, 0.25])
    assert len(verify_receipt_chain(tokens, did_for(org), did_for(person), TERMS)) == 3
    with pytest.raises(VerificationFailed, match="missing or out of order"):
        verify_receipt_chain([tokens[1], tokens[0], tokens[2]], did_for(org), did_for(person))
    header, claims, signature = tokens[1].split(".")
    richer = b64url(b64url_decode(claims).replace(b'"amount":0.5', b'"amount":5.0'))
    assert richer != claims
    with pytest.raises(VerificationFailed, match="receipt 1: bad signature"):
        verify_receipt_chain(
            [tokens[0], f"{header}.{richer}.{signature}", tokens[2]], did_for(org), did_for(person)
        )
    # a receipt re-issued with other content, even properly signed, breaks the next link
    from agents.exchange.rewards import receipt_hash

    redone = _receipt(org, did_for(org), person, 0.4, seq=1, prev=receipt_hash(tokens[0]))
    with pytest.raises(VerificationFailed, match="receipt 2 does not chain"):
        verify_receipt_chain([tokens[0], redone, tokens[2]], did_for(org), did_for(person))
    plain = jws_sign(org, json.loads(b64url_decode(tokens[0].split(".")[1]))["vc"])
    with pytest.raises(VerificationFailed, match="receipt 0: a plain signed token"):
        verify_receipt_chain([plain], did_for(org), did_for(person))


def test_a_reward_receipt_names_the_person_as_its_subject(org, person):
    token = _chain(org, person, [0.5])[0]
    vc = json.loads(b64url_decode(token.split(".")[1]))["vc"]
    assert vc["type"] == ["VerifiableCredential", "RewardReceipt"]
    assert (vc["issuer"], vc["credentialSubject"]["id"]) == (did_for(org), did_for(person))
    assert "expirationDate" not in vc
    receipt = verify_reward_receipt(token, did_for(person), did_for(org))
    assert (receipt.seq, receipt.prev, receipt.amount) == (0, None, 0.5)


def test_a_receipt_issued_by_a_stranger_in_the_organizations_name_is_refused(org, person):
    token = _receipt(generate_key(), did_for(org), person, 0.5)  # a stranger's key
    with pytest.raises(VerificationFailed, match="not signed by the organization it names"):
        verify_reward_receipt(token, did_for(person))
    with pytest.raises(VerificationFailed, match="expected"):
        verify_reward_receipt(token, did_for(person), organization=did_for(org))
    with pytest.raises(VerificationFailed, match="receipt 0: issued by"):
        verify_receipt_chain([token], did_for(org), did_for(person))


@pytest.mark.parametrize(
    ("value", "unit", "words"),
    [
        (1, "credits", "1 credit"),
        (2, "credits", "2 credits"),
        (1.5, "points", "1.5 points"),
        (1, "EUR", "1 EUR"),
        (1, "bonus", "1 bonus"),
        (1, "class", "1 class"),
    ],
)
def test_reward_amounts_read_as_words(value: float, unit: str, words: str) -> None:
    from identity.summary import amount_words

    assert amount_words(value, unit) == words
