"""Reward receipts: amounts per the terms, the cap exactly, and a chain that shows tampering."""

from __future__ import annotations

import json

import pytest

from agents.exchange.rewards import (
    make_receipt,
    next_amount,
    receipt_hash,
    total,
    totals,
    verify_receipt_chain,
)
from identity.keys import b64url, b64url_decode
from identity.vc_jwt import verify_credential
from vault.errors import VerificationFailed

from . import (  # noqa: F401
    call,
    consent_jws,
    db_url_fixture,
    exchange_fixture,
    identity,
    random_delta,
    update_jws,
)

TERMS = {"per_update": 0.3, "unit": "EUR", "cap": 0.7}


def _chain(org, person, amounts, request_id="req-1"):
    receipts, prev = [], None
    for seq, amount in enumerate(amounts):
        receipt = make_receipt(
            org.jwk,
            request_id=request_id,
            round_index=seq,
            person=person.did,
            organization=org.did,
            amount=amount,
            unit="EUR",
            seq=seq,
            prev=prev,
        )
        receipts.append(receipt)
        prev = receipt_hash(receipt)
    return receipts


def test_next_amount_pays_per_update_then_the_rest_then_nothing():
    assert next_amount(TERMS, []) == 0.3
    assert next_amount(TERMS, [0.3]) == 0.3
    assert next_amount(TERMS, [0.3, 0.3]) == 0.1  # exactly, not 0.09999999999999998
    assert next_amount(TERMS, [0.3, 0.3, 0.1]) is None


def test_total_is_exact():
    assert total([0.1, 0.2]) == 0.3
    assert total([]) == 0.0


def test_valid_chain_verifies_against_the_terms():
    org, person = identity(), identity()
    receipts = _chain(org, person, [0.3, 0.3, 0.1])

    payloads = verify_receipt_chain(receipts, org.did, person.did, {"req-1": TERMS})

    assert [p["seq"] for p in payloads] == [0, 1, 2]
    assert totals(payloads) == {(org.did, "req-1", "EUR"): 0.7}


def test_missing_receipt_is_detected():
    org, person = identity(), identity()
    receipts = _chain(org, person, [0.3, 0.3, 0.1])

    with pytest.raises(VerificationFailed, match="missing or out of order"):
        verify_receipt_chain([receipts[0], receipts[2]], org.did, person.did)


def test_reordered_receipts_are_detected():
    org, person = identity(), identity()
    receipts = _chain(org, person, [0.3, 0.3])

    with pytest.raises(VerificationFailed):
        verify_receipt_chain(receipts[::-1], org.did, person.did)


def test_tampered_receipt_is_detected():
    org, person = identity(), identity()
    receipts = _chain(org, person, [0.3, 0.3])
    header, body, signature = receipts[1].split(".")
    payload = json.loads(b64url_decode(body))
    payload["amount"] = 30.0
    tampered = f"{header}.{b64url(json.dumps(payload).encode())}.{signature}"

    with pytest.raises(VerificationFailed, match="receipt 1"):
        verify_receipt_chain([receipts[0], tampered], org.did, person.did)


def test_receipt_re_signed_by_someone_else_is_detected():
    org, person, forger = identity(), identity(), identity()
    receipts = _chain(org, person, [0.3])
    forged = _chain(forger, person, [0.3])

    with pytest.raises(VerificationFailed, match="expected"):
        verify_receipt_chain(forged, org.did, person.did)
    with pytest.raises(VerificationFailed, match="another person"):
        verify_receipt_chain(receipts, org.did, identity().did)


def test_chain_with_a_broken_prev_link_is_detected():
    org, person = identity(), identity()
    first = _chain(org, person, [0.3])[0]
    second = make_receipt(
        org.jwk,
        request_id="req-1",
        round_index=1,
        person=person.did,
        organization=org.did,
        amount=0.3,
        unit="EUR",
        seq=1,
        prev="0" * 64,
    )

    with pytest.raises(VerificationFailed, match="does not chain"):
        verify_receipt_chain([first, second], org.did, person.did)


@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        ([0.3, 0.3, 0.1, 0.1], "beyond the cap"),
        ([0.3, 0.3, 0.3], "terms say 0.1"),
        ([0.3, 0.2], "terms say 0.3"),
        ([0.5], "terms say 0.3"),
    ],
)
def test_amounts_that_do_not_follow_the_terms_are_detected(amounts, message):
    org, person = identity(), identity()
    receipts = _chain(org, person, amounts)

    verify_receipt_chain(receipts, org.did, person.did)  # the chain itself is intact
    with pytest.raises(VerificationFailed, match=message):
        verify_receipt_chain(receipts, org.did, person.did, {"req-1": TERMS})


def test_exchange_pays_per_terms_caps_exactly_and_chains_across_requests(exchange):
    aggregation = {
        "strategy": "fedavg",
        "min_updates": 1,
        "round_seconds": 60,
        "max_update_norm": 10.0,
    }
    first, first_token = exchange.open_request(rounds=4, reward=TERMS, aggregation=aggregation)
    second, second_token = exchange.open_request(
        rounds=1, reward={"per_update": 2.0, "unit": "EUR", "cap": 5.0}, aggregation=aggregation
    )
    vault, consent = exchange.consenting_vault(first, first_token)
    second_consent = consent_jws(vault, second_token, second)
    call(exchange.client, vault, "POST", "/v1/consents", {"consent": second_consent})

    answers = []
    for round_index in range(4):
        update = update_jws(vault, first, consent, random_delta(), round_index=round_index)
        answers.append(exchange.submit(vault, first, update).json())
        if round_index == 1:
            answers.append(
                exchange.submit(
                    vault, second, update_jws(vault, second, second_consent, random_delta())
                ).json()
            )
    receipts = call(exchange.client, vault, "GET", "/v1/rewards").json()["receipts"]

    assert all(a["accepted"] for a in answers)
    # the fourth update in the first request is accepted but earns nothing: the cap is reached
    assert answers[-1]["receipt"] is None
    payloads = verify_receipt_chain(
        receipts,
        exchange.org.did,
        vault.did,
        {first["id"]: first["reward"], second["id"]: second["reward"]},
    )
    assert [(p["request"] == first["id"], p["amount"]) for p in payloads] == [
        (True, 0.3),
        (True, 0.3),
        (False, 2.0),
        (True, 0.1),
    ]
    assert totals(payloads)[(exchange.org.did, first["id"], "EUR")] == 0.7
    signer, _ = verify_credential(receipts[0], "RewardReceipt")
    assert signer == exchange.org.did
