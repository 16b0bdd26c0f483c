"""Federated rounds: update checks, rejections with reasons, aggregation, round advance."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from agents.exchange import aggregate
from agents.exchange.server import create_app
from identity.vc_jwt import issue_credential

from . import (  # noqa: F401
    SECRET,
    SHAPES,
    Exchange,
    call,
    consent_jws,
    db_url_fixture,
    exchange_fixture,
    identity,
    payload_of,
    random_delta,
    update_jws,
)


def _params(exchange, who, request):
    answer = call(exchange.client, who, "GET", f"/v1/requests/{request['id']}/round/params")
    assert answer.status_code == 200, answer.text
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _round(exchange, who, request):
    return call(exchange.client, who, "GET", f"/v1/requests/{request['id']}/round").json()


def _flat(delta):
    return np.concatenate([delta[name].ravel() for name in SHAPES])


def test_round_with_malicious_and_duplicate_updates(exchange):
    request, token = exchange.open_request()
    honest = [exchange.consenting_vault(request, token) for _ in range(3)]
    nan_vault, nan_consent = exchange.consenting_vault(request, token)
    huge_vault, huge_consent = exchange.consenting_vault(request, token)
    before = _params(exchange, honest[0][0], request)
    deltas = [random_delta(seed=i) for i in range(3)]
    nan_delta = random_delta(seed=9)
    nan_delta["w"][1, 2] = np.nan
    huge_delta = {name: np.full(shape, 1e6, dtype=np.float32) for name, shape in SHAPES.items()}

    (a, a_consent), (b, b_consent), (c, c_consent) = honest
    answers = {
        "a": exchange.submit(a, request, update_jws(a, request, a_consent, deltas[0], examples=10)),
        "nan": exchange.submit(
            nan_vault, request, update_jws(nan_vault, request, nan_consent, nan_delta)
        ),
        "huge": exchange.submit(
            huge_vault, request, update_jws(huge_vault, request, huge_consent, huge_delta)
        ),
        "dup": exchange.submit(a, request, update_jws(a, request, a_consent, random_delta(seed=5))),
        "b": exchange.submit(b, request, update_jws(b, request, b_consent, deltas[1], examples=20)),
        "c": exchange.submit(c, request, update_jws(c, request, c_consent, deltas[2], examples=30)),
    }

    for key in ("a", "b", "c"):
        assert answers[key].status_code == 200, answers[key].text
        assert answers[key].json()["accepted"] is True
    assert answers["nan"].status_code == 400
    assert "NaN" in answers["nan"].json()["error"]
    assert answers["huge"].status_code == 400
    assert "norm" in answers["huge"].json()["error"]
    assert answers["dup"].status_code == 409
    assert "duplicate" in answers["dup"].json()["error"]
    assert _round(exchange, a, request)["round"] == 1
    after = _params(exchange, a, request)
    weights = np.array([10, 20, 30]) / 60
    for name in SHAPES:
        expected = before[name] + sum(w * d[name] for w, d in zip(weights, deltas, strict=True))
        np.testing.assert_allclose(after[name], expected, rtol=1e-5, atol=1e-6)
    status = call(exchange.client, exchange.org, "GET", f"/v1/requests/{request['id']}/status")
    round0 = status.json()["per_round"][0]
    assert (round0["accepted"], round0["rejected"]) == (3, 3)
    assert sorted(round0["participants"]) == sorted(v.did for v, _ in honest)
    reasons = " | ".join(r["reason"] for r in round0["rejections"])
    assert "NaN" in reasons and "norm" in reasons and "duplicate" in reasons


@pytest.mark.parametrize("strategy", ["trimmed_mean", "median"])
def test_robust_strategies_aggregate_coordinate_wise(exchange, strategy):
    aggregation = {
        "strategy": strategy,
        "min_updates": 5,
        "round_seconds": 3600,
        "max_update_norm": 100.0,
        "trim_fraction": 0.2,
    }
    request, token = exchange.open_request(aggregation=aggregation)
    vaults = [exchange.consenting_vault(request, token) for _ in range(5)]
    before = _params(exchange, vaults[0][0], request)
    deltas = [random_delta(seed=i) for i in range(4)]
    deltas.append({name: np.full(shape, 5.0, dtype=np.float32) for name, shape in SHAPES.items()})

    for (vault, consent), delta in zip(vaults, deltas, strict=True):
        answer = exchange.submit(vault, request, update_jws(vault, request, consent, delta))
        assert answer.status_code == 200, answer.text

    after = _params(exchange, vaults[0][0], request)
    matrix = np.stack([_flat(d) for d in deltas])
    robust = (
        aggregate.median(matrix) if strategy == "median" else aggregate.trimmed_mean(matrix, 0.2)
    )
    np.testing.assert_allclose(_flat(after) - _flat(before), robust, rtol=1e-5, atol=1e-6)


def test_update_checks_give_reasons(exchange):
    request, token = exchange.open_request()
    vault, consent = exchange.consenting_vault(request, token)
    stranger = identity()
    bad_shape = {"w": np.zeros((3, 4), dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}
    extra = {**random_delta(), "bias2": np.zeros(2, dtype=np.float32)}
    cases = [
        (vault, update_jws(vault, request, consent, bad_shape), 400, "shape mismatch"),
        (vault, update_jws(vault, request, consent, {"w": random_delta()["w"]}), 400, "missing"),
        (vault, update_jws(vault, request, consent, extra), 400, "unknown parameters"),
        (
            vault,
            update_jws(vault, request, consent, random_delta(), package="sha256:" + "1" * 64),
            400,
            "another package",
        ),
        (
            vault,
            update_jws(vault, request, consent, random_delta(), round_index=1),
            409,
            "not open",
        ),
        (vault, update_jws(vault, request, consent, random_delta(), examples=0), 400, "examples"),
        (stranger, update_jws(stranger, request, consent, random_delta()), 403, "no consent"),
        (stranger, update_jws(vault, request, consent, random_delta()), 403, "another DID"),
    ]
    for who, token_, status, reason in cases:
        answer = exchange.submit(who, request, token_)
        assert answer.status_code == status, (reason, answer.text)
        assert reason in answer.json()["error"]


def test_identical_update_sent_twice_counts_once(exchange):
    request, token = exchange.open_request()
    vault, consent = exchange.consenting_vault(request, token)
    update = update_jws(vault, request, consent, random_delta())

    first = exchange.submit(vault, request, update)
    retry = exchange.submit(vault, request, update)

    assert first.status_code == retry.status_code == 200
    assert retry.json()["receipt"] == first.json()["receipt"]
    status = call(exchange.client, exchange.org, "GET", f"/v1/requests/{request['id']}/status")
    assert status.json()["accepted"] == 1
    rewards = call(exchange.client, vault, "GET", "/v1/rewards").json()["receipts"]
    assert rewards == [first.json()["receipt"]]


def test_revoked_consent_stops_the_next_update(exchange):
    request, token = exchange.open_request()
    vault, consent = exchange.consenting_vault(request, token)
    revocation = issue_credential(
        vault.jwk,
        {
            "type": "ConsentRevocation",
            "consent": payload_of(consent)["id"],
            "subject": vault.did,
            "issued": payload_of(consent)["issued"],
        },
    )

    by_other = call(
        exchange.client, identity(), "POST", "/v1/revocations", {"revocation": revocation}
    )
    revoked = call(exchange.client, vault, "POST", "/v1/revocations", {"revocation": revocation})
    answer = exchange.submit(vault, request, update_jws(vault, request, consent, random_delta()))
    params = call(exchange.client, vault, "GET", f"/v1/requests/{request['id']}/round/params")

    assert by_other.status_code == 403
    assert revoked.status_code == 200
    assert answer.status_code == 403
    assert "revoked" in answer.json()["error"]
    assert params.status_code == 403


def test_consent_checks(exchange):
    request, token = exchange.open_request()
    vault = identity()
    cases = [
        (
            vault,
            consent_jws(vault, token, request, request_hash="0" * 64),
            400,
            "different version",
        ),
        (vault, consent_jws(vault, token, request, datasets=["location.points"]), 400, "datasets"),
        (vault, consent_jws(vault, token, request, organization=vault.did), 400, "organization"),
        (vault, consent_jws(vault, token, request, subject=identity().did), 400, "subject"),
        (identity(), consent_jws(vault, token, request), 403, "subject"),
        (vault, consent_jws(vault, token, request, expires="2001-01-01T00:00:00Z"), 400, "expired"),
    ]
    for who, consent, status, reason in cases:
        answer = call(exchange.client, who, "POST", "/v1/consents", {"consent": consent})
        assert answer.status_code == status, (reason, answer.text)
        assert reason in answer.json()["error"]
    good = consent_jws(vault, token, request)
    for _ in range(2):  # idempotent
        answer = call(exchange.client, vault, "POST", "/v1/consents", {"consent": good})
        assert answer.status_code == 200


def test_only_the_issuer_sees_status_and_model(exchange):
    request, token = exchange.open_request()
    vault, _ = exchange.consenting_vault(request, token)

    for path in ("status", "model"):
        answer = call(exchange.client, vault, "GET", f"/v1/requests/{request['id']}/{path}")
        assert answer.status_code == 403
    model = call(exchange.client, exchange.org, "GET", f"/v1/requests/{request['id']}/model")
    assert model.status_code == 200
    assert np.load(io.BytesIO(model.content))["w"].shape == (4, 3)


def test_final_round_closes_the_request(exchange):
    aggregation = {
        "strategy": "fedavg",
        "min_updates": 1,
        "round_seconds": 60,
        "max_update_norm": 10.0,
    }
    request, token = exchange.open_request(rounds=2, aggregation=aggregation)
    vault, consent = exchange.consenting_vault(request, token)

    for round_index in range(2):
        update = update_jws(vault, request, consent, random_delta(), round_index=round_index)
        assert exchange.submit(vault, request, update).status_code == 200
    late = exchange.submit(
        vault, request, update_jws(vault, request, consent, random_delta(), round_index=2)
    )

    assert _round(exchange, vault, request) == {
        "round": 2,
        "rounds": 2,
        "deadline": None,
        "closed": True,
    }
    assert late.status_code == 409
    assert "closed" in late.json()["error"]
    assert call(exchange.client, vault, "GET", "/v1/requests").json() == []


def test_deadline_aggregates_what_arrived(db_url, tmp_path):
    now = [time.time()]
    app = create_app(db_url, secret=SECRET, clock=lambda: now[0])
    org = identity()
    app.state.store.admit(org.did, "Org")
    with TestClient(app) as client:
        exchange = Exchange(app, client, org, tmp_path)
        aggregation = {
            "strategy": "fedavg",
            "min_updates": 3,
            "round_seconds": 20,
            "max_update_norm": 10.0,
        }
        request, token = exchange.open_request(aggregation=aggregation)
        vault, consent = exchange.consenting_vault(request, token)

        now[0] += 30  # deadline passes with no update: the round gets a fresh deadline
        empty = _round(exchange, vault, request)
        exchange.submit(vault, request, update_jws(vault, request, consent, random_delta()))
        still_open = _round(exchange, vault, request)
        now[0] += 30
        _round(exchange, vault, request)  # the deadline passed: aggregation is scheduled
        advanced = _round(exchange, vault, request)

    app.state.store.close()
    assert empty["round"] == 0
    assert still_open["round"] == 0
    assert advanced["round"] == 1
