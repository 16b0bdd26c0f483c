"""Signed calls: replays, stale times, unknown signers, tampered bodies are refused."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from agents.exchange.auth import (
    HEADER_DID,
    HEADER_NONCE,
    AuthRefused,
    sign_call,
    verify_call,
)

from . import call, db_url_fixture, exchange_fixture, identity, signed_headers  # noqa: F401

EMPTY = hashlib.sha256(b"").hexdigest()


def test_sign_and_verify_roundtrip():
    who = identity()
    headers = sign_call(who.jwk, who.did, "GET", "/v1/requests?x=1", b"")

    signed = verify_call(headers, "GET", "/v1/requests?x=1", EMPTY)

    assert signed.did == who.did
    assert signed.nonce == headers[HEADER_NONCE]


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", "/v1/requests?x=1", b""),
        ("GET", "/v1/rewards", b""),
        ("GET", "/v1/requests?x=1", b"x"),
    ],
)
def test_verify_refuses_any_changed_part(method, target, body):
    who = identity()
    headers = sign_call(who.jwk, who.did, "GET", "/v1/requests?x=1", b"")

    with pytest.raises(AuthRefused, match="bad call signature"):
        verify_call(headers, method, target, hashlib.sha256(body).hexdigest())


def test_verify_refuses_a_stale_time():
    who = identity()
    headers = sign_call(who.jwk, who.did, "GET", "/v1/rewards", b"", now=time.time() - 301)

    with pytest.raises(AuthRefused, match="stale"):
        verify_call(headers, "GET", "/v1/rewards", EMPTY)


def test_verify_refuses_a_claimed_did_that_did_not_sign():
    signer, other = identity(), identity()
    headers = sign_call(signer.jwk, signer.did, "GET", "/v1/rewards", b"")
    headers[HEADER_DID] = other.did

    with pytest.raises(AuthRefused, match="bad call signature"):
        verify_call(headers, "GET", "/v1/rewards", EMPTY)


def test_verify_refuses_missing_and_malformed_headers():
    who = identity()
    headers = sign_call(who.jwk, who.did, "GET", "/v1/rewards", b"")
    with pytest.raises(AuthRefused, match="not signed"):
        verify_call({}, "GET", "/v1/rewards", EMPTY)
    with pytest.raises(AuthRefused, match="Nonce"):
        verify_call({**headers, HEADER_NONCE: "zz"}, "GET", "/v1/rewards", EMPTY)
    with pytest.raises(AuthRefused, match="bad call signature"):
        verify_call({**headers, HEADER_DID: "did:web:example.com"}, "GET", "/v1/rewards", EMPTY)


def test_unsigned_call_is_refused(exchange):
    answer = exchange.client.get("/v1/requests")

    assert answer.status_code == 401
    assert "not signed" in answer.json()["error"]


def test_replayed_call_is_refused(exchange):
    vault = identity()
    headers = signed_headers(vault, "GET", "/v1/rewards")

    first = exchange.client.get("/v1/rewards", headers=headers)
    replay = exchange.client.get("/v1/rewards", headers=headers)

    assert first.status_code == 200
    assert replay.status_code == 401
    assert "replayed" in replay.json()["error"]


def test_stale_call_is_refused(exchange):
    vault = identity()
    headers = sign_call(vault.jwk, vault.did, "GET", "/v1/rewards", b"", now=time.time() - 1000)

    answer = exchange.client.get("/v1/rewards", headers=headers)

    assert answer.status_code == 401
    assert "stale" in answer.json()["error"]


def test_tampered_body_is_refused(exchange):
    vault = identity()
    body = json.dumps({"consent": "x.y.z"}).encode()
    headers = signed_headers(vault, "POST", "/v1/consents", body)

    answer = exchange.client.post("/v1/consents", content=body.replace(b"x", b"w"), headers=headers)

    assert answer.status_code == 401
    assert "bad call signature" in answer.json()["error"]


def test_signature_for_another_path_is_refused(exchange):
    vault = identity()
    headers = signed_headers(vault, "GET", "/v1/requests")

    answer = exchange.client.get("/v1/rewards", headers=headers)

    assert answer.status_code == 401


def test_unknown_signer_cannot_use_org_endpoints(exchange):
    stranger = identity()

    answer = call(exchange.client, stranger, "POST", "/v1/requests", {"request": "a.b.c"})

    assert answer.status_code == 403
    assert "not admitted" in answer.json()["error"]


def test_oversized_json_body_is_refused(exchange):
    vault = identity()

    answer = call(exchange.client, vault, "POST", "/v1/consents", {"consent": "x" * (2 * 1024**2)})

    assert answer.status_code == 413
    assert "limit" in answer.json()["error"]


def test_get_with_a_body_is_refused(exchange):
    vault = identity()
    body = b'{"a": 1}'
    headers = signed_headers(vault, "GET", "/v1/rewards", body)

    answer = exchange.client.request("GET", "/v1/rewards", content=body, headers=headers)

    assert answer.status_code == 413


def test_openapi_schema_is_served_without_auth(exchange):
    answer = exchange.client.get("/openapi.json")

    assert answer.status_code == 200
    assert "/v1/requests/{request_id}/updates" in answer.json()["paths"]
