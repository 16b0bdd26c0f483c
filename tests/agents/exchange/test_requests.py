"""Posting training requests: forged, modified, expired and mismatched requests are refused."""

from __future__ import annotations

import base64
from datetime import timedelta

from agents.package import package_address
from identity.keys import jws_sign
from identity.vc_jwt import issue_credential

from . import (  # noqa: F401
    call,
    credential,
    db_url_fixture,
    exchange_fixture,
    identity,
    iso,
    make_package,
    request_payload,
)


def _post(exchange, token, package, who=None):
    who = who or exchange.org
    body = {
        "request": token,
        "package": base64.b64encode(package).decode(),
        "reward_key": who.jwk,
    }
    return call(exchange.client, who, "POST", "/v1/requests", body)


def _valid(exchange, **overrides):
    package = make_package(exchange.folder)
    return request_payload(exchange.org, package_address(package), **overrides), package


def test_valid_request_is_listed_and_its_package_served(exchange):
    payload, package = _valid(exchange)
    token = issue_credential(exchange.org.jwk, payload)

    posted = _post(exchange, token, package)
    listed = call(exchange.client, identity(), "GET", "/v1/requests")
    fetched = call(exchange.client, identity(), "GET", f"/v1/packages/{payload['package']}")

    assert posted.status_code == 200
    assert posted.json() == {"id": payload["id"], "package": payload["package"]}
    assert listed.json() == [{"request": token, "package": payload["package"]}]
    assert fetched.content == package
    assert fetched.headers["content-type"] == "application/octet-stream"


def test_forged_request_signed_by_another_key_is_refused(exchange):
    payload, package = _valid(exchange)
    forger = identity()
    exchange.app.state.store.admit(forger.did, "Forger")  # even an admitted one

    answer = _post(exchange, credential(forger.jwk, payload), package, who=forger)

    assert answer.status_code == 400
    assert "not by its issuer" in answer.json()["error"]


def test_request_changed_by_one_byte_is_refused(exchange):
    payload, package = _valid(exchange)
    header, body, signature = issue_credential(exchange.org.jwk, payload).split(".")
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]

    answer = _post(exchange, f"{header}.{flipped}.{signature}", package)

    assert answer.status_code == 400
    assert "does not verify as a TrainingRequest credential" in answer.json()["error"]


def test_request_in_the_old_plain_jws_form_is_refused(exchange):
    payload, package = _valid(exchange)

    answer = _post(exchange, jws_sign(exchange.org.jwk, payload), package)

    assert answer.status_code == 400
    assert "not a verifiable credential" in answer.json()["error"]


def test_expired_request_is_refused(exchange):
    payload, package = _valid(
        exchange, issued=iso(-timedelta(days=2)), expires=iso(-timedelta(days=1))
    )

    answer = _post(exchange, issue_credential(exchange.org.jwk, payload), package)

    assert answer.status_code == 400
    assert "expired" in answer.json()["error"]


def test_package_hash_mismatch_is_refused(exchange):
    payload, _ = _valid(exchange)
    other = make_package(exchange.folder, seed=7)

    answer = _post(exchange, issue_credential(exchange.org.jwk, payload), other)

    assert answer.status_code == 400
    assert "package hash mismatch" in answer.json()["error"]


def test_package_that_is_not_a_package_is_refused(exchange):
    junk = b"PK\x03\x04 not a zip at all"
    payload = request_payload(exchange.org, package_address(junk))

    answer = _post(exchange, issue_credential(exchange.org.jwk, payload), junk)

    assert answer.status_code == 400
    assert "not a task package" in answer.json()["error"]


def test_request_by_another_organization_than_the_caller_is_refused(exchange):
    payload, package = _valid(exchange)
    other = identity()
    exchange.app.state.store.admit(other.did, "Other")

    answer = _post(exchange, issue_credential(exchange.org.jwk, payload), package, who=other)

    assert answer.status_code == 403
    assert "another organization" in answer.json()["error"]


def test_malformed_terms_are_refused_with_the_field_named(exchange):
    payload, package = _valid(exchange, rounds=0)

    answer = _post(exchange, issue_credential(exchange.org.jwk, payload), package)

    assert answer.status_code == 400
    assert "'rounds'" in answer.json()["error"]


def test_recipe_must_match_the_package(exchange):
    payload, package = _valid(exchange, recipe="mobility_daily")

    answer = _post(exchange, issue_credential(exchange.org.jwk, payload), package)

    assert answer.status_code == 400
    assert "recipe" in answer.json()["error"]


def test_same_request_posted_twice_is_a_conflict(exchange):
    payload, package = _valid(exchange)
    token = issue_credential(exchange.org.jwk, payload)

    assert _post(exchange, token, package).status_code == 200
    again = _post(exchange, token, package)

    assert again.status_code == 409


def test_reward_key_must_be_the_callers(exchange):
    payload, package = _valid(exchange)
    body = {
        "request": issue_credential(exchange.org.jwk, payload),
        "package": base64.b64encode(package).decode(),
        "reward_key": identity().jwk,
    }

    answer = call(exchange.client, exchange.org, "POST", "/v1/requests", body)

    assert answer.status_code == 400
    assert "reward_key" in answer.json()["error"]


def test_unknown_package_and_request_are_404(exchange):
    vault = identity()

    package = call(exchange.client, vault, "GET", "/v1/packages/sha256:" + "0" * 64)
    round_ = call(exchange.client, vault, "GET", "/v1/requests/req-nope/round")

    assert package.status_code == 404
    assert round_.status_code == 404
    assert "no request" in round_.json()["error"]
