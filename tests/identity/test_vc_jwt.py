"""The VC-JWT layer: each kind round-trips, didkit and we accept each other's credentials, and
what is refused, and why."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from identity.keys import b64url, b64url_decode, did_for, generate_key, jws_sign, sign
from identity.vc_jwt import LAYOUTS, issue_credential, verify_credential
from tests.fixtures.training_requests import forged_credential, iso, request_payload
from vault.errors import TesseraError, VerificationFailed

NOW = time.time()


def _at(offset: float) -> str:
    from datetime import UTC, datetime

    return iso(datetime.fromtimestamp(NOW + offset, UTC))


def _payloads(org: str, person: str) -> dict[str, dict[str, Any]]:
    consent_id = "consent-" + "c" * 32
    return {
        "TrainingRequest": request_payload(org, "sha256:" + "ab" * 32),
        "ConsentReceipt": {
            "type": "ConsentReceipt",
            "id": consent_id,
            "request": "req-" + "1" * 32,
            "request_hash": "0" * 64,
            "subject": did_for(person),
            "organization": did_for(org),
            "datasets": ["health.step_count"],
            "epsilon_budget": 1.5,
            "issued": _at(-60),
            "expires": _at(86_400),
        },
        "ConsentRevocation": {
            "type": "ConsentRevocation",
            "consent": consent_id,
            "subject": did_for(person),
            "issued": _at(-60),
        },
        "RewardReceipt": {
            "type": "RewardReceipt",
            "id": "reward-" + "2" * 32,
            "request": "req-" + "1" * 32,
            "round": 0,
            "person": did_for(person),
            "organization": did_for(org),
            "amount": 0.5,
            "unit": "EUR",
            "issued": _at(-60),
            "seq": 0,
            "prev": None,
        },
    }


def _signer(kind: str, org: str, person: str) -> str:
    return org if kind in ("TrainingRequest", "RewardReceipt") else person


def _claims(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[1]))


def _resign(jwk: str, claims: dict[str, Any]) -> str:
    """A JWT with ``claims``, properly signed by ``jwk`` (what a careless issuer could write)."""
    did = did_for(jwk)
    header = {"alg": "EdDSA", "kid": f"{did}#{did.removeprefix('did:key:')}"}
    head = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{head}.{b64url(sign(jwk, head.encode('ascii')))}"


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_each_kind_is_a_w3c_credential_that_round_trips(org, person, kind):
    payload = _payloads(org, person)[kind]
    signer = _signer(kind, org, person)
    token = issue_credential(signer, payload)
    claims = _claims(token)
    vc = claims["vc"]
    assert vc["@context"] == ["https://www.w3.org/2018/credentials/v1"]
    assert vc["type"] == ["VerifiableCredential", kind]
    assert vc["issuer"] == claims["iss"] == did_for(signer)
    assert vc["issuanceDate"] == payload["issued"]
    assert ("expirationDate" in vc) == ("expires" in payload)
    assert ("id" in vc) == ("id" in payload)
    assert "type" not in vc["credentialSubject"] and "issued" not in vc["credentialSubject"]
    issuer, back = verify_credential(token, kind, expected_did=did_for(signer))
    assert issuer == did_for(signer)
    assert back == payload


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_another_kind_is_refused_by_name(org, person, kind):
    other = next(k for k in sorted(LAYOUTS) if k != kind)
    token = issue_credential(_signer(other, org, person), _payloads(org, person)[other])
    with pytest.raises(VerificationFailed, match=f"not a {kind} credential .type '{other}'"):
        verify_credential(token, kind)


def test_a_changed_payload_under_the_old_signature_is_refused(org, person):
    token = issue_credential(org, _payloads(org, person)["RewardReceipt"])
    header, claims, signature = token.split(".")
    changed = b64url(b64url_decode(claims).replace(b'"amount":0.5', b'"amount":9.5'))
    assert changed != claims
    with pytest.raises(VerificationFailed, match="bad signature by did:key"):
        verify_credential(f"{header}.{changed}.{signature}", "RewardReceipt")


def test_the_wrong_issuer_is_refused(org, person):
    token = issue_credential(org, _payloads(org, person)["RewardReceipt"])
    with pytest.raises(VerificationFailed, match=f"issued by {did_for(org)}, expected"):
        verify_credential(token, "RewardReceipt", expected_did=did_for(person))


def test_a_credential_signed_by_another_key_than_its_issuer_is_refused(org, person):
    payload = _payloads(org, person)["RewardReceipt"]
    token = forged_credential(generate_key(), payload, did_for(org))
    with pytest.raises(VerificationFailed, match="not by its issuer"):
        verify_credential(token, "RewardReceipt", expected_did=did_for(org))


def test_a_plain_jws_of_the_old_form_is_refused(org, person):
    token = jws_sign(org, _payloads(org, person)["RewardReceipt"])
    with pytest.raises(VerificationFailed, match="plain signed token, not a verifiable credential"):
        verify_credential(token, "RewardReceipt")


@pytest.mark.parametrize(
    ("claim", "value"),
    [("iss", "did:key:z6MkfakeIssuer"), ("sub", "did:key:z6Mkother"), ("jti", "urn:x"), ("nbf", 1)],
)
def test_jwt_claims_that_disagree_with_the_credential_are_refused(org, person, claim, value):
    claims = _claims(issue_credential(org, _payloads(org, person)["RewardReceipt"]))
    claims[claim] = value
    with pytest.raises(VerificationFailed, match=f"JWT claims \\['{claim}'\\] disagree"):
        verify_credential(_resign(org, claims), "RewardReceipt")


def test_an_expired_credential_still_has_its_signature_checked(person):
    # didkit refuses a JWT past its exp without a reason; the caller judges expiry (with a
    # reason), and a history can still check who signed it
    payload = {**_payloads(generate_key(), person)["ConsentReceipt"]}
    payload |= {"issued": _at(-7200), "expires": _at(-3600)}
    token = issue_credential(person, payload)
    assert _claims(token)["exp"] < time.time()
    assert verify_credential(token, "ConsentReceipt")[1] == payload
    forged = forged_credential(generate_key(), payload, did_for(person))
    with pytest.raises(VerificationFailed):
        verify_credential(forged, "ConsentReceipt")
    header, claims, signature = token.split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    with pytest.raises(VerificationFailed, match="bad signature"):
        verify_credential(f"{header}.{claims}.{flipped}", "ConsentReceipt")


def test_a_credential_issued_a_little_in_the_future_verifies(org, person):
    # clock skew between machines is the caller's to judge, not didkit's
    payload = {**_payloads(org, person)["RewardReceipt"], "issued": _at(120)}
    assert verify_credential(issue_credential(org, payload), "RewardReceipt")[1] == payload


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c", "x" * 100_000, 42, None])
def test_what_is_not_a_token_is_refused(token):
    with pytest.raises(VerificationFailed):
        verify_credential(token, "TrainingRequest")


def test_issuing_for_an_issuer_whose_key_is_not_held_is_refused(org, person):
    payload = _payloads(org, person)["TrainingRequest"]
    with pytest.raises(TesseraError, match="names issuer"):
        issue_credential(person, payload)
    with pytest.raises(TesseraError, match="no credential layout"):
        issue_credential(org, {**payload, "type": "Something"})


def test_the_sync_wrapper_works_inside_a_running_event_loop(org, person):
    payload = _payloads(org, person)["RewardReceipt"]

    async def inside() -> dict[str, Any]:
        return verify_credential(issue_credential(org, payload), "RewardReceipt")[1]

    assert asyncio.run(inside()) == payload


def _didkit(call: str, *args: str) -> str:
    import didkit

    async def run() -> str:
        return await getattr(didkit, call)(*args)

    return asyncio.run(run())


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_didkit_verifies_the_credentials_issued_here(org, person, kind):
    signer = org if kind in ("TrainingRequest", "RewardReceipt") else person
    token = issue_credential(signer, _payloads(org, person)[kind])
    options = json.dumps({"proofFormat": "jwt", "proofPurpose": "assertionMethod"})
    result = json.loads(_didkit("verify_credential", token, options))
    assert result["errors"] == [] and result["checks"] == ["JWS"], result


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_credentials_issued_by_didkit_verify_here(org, person, kind):
    from identity.vc_jwt import to_credential

    signer = org if kind in ("TrainingRequest", "RewardReceipt") else person
    payload = _payloads(org, person)[kind]
    credential = to_credential(payload, did_for(signer))
    method = _didkit("key_to_verification_method", "key", signer)
    options = {"proofFormat": "jwt", "verificationMethod": method}
    options["proofPurpose"] = "assertionMethod"
    token = _didkit("issue_credential", json.dumps(credential), json.dumps(options), signer)
    assert verify_credential(token, kind)[1] == payload
