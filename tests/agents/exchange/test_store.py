"""The store on SQLite and PostgreSQL: URLs, transactions, key wrapping, nonces, chunked rounds,
concurrent submissions and recovery from a failed aggregation."""

from __future__ import annotations

import io
import stat
import threading
import time

import numpy as np
import pytest

from agents.exchange import aggregate
from agents.exchange.client import ExchangeClient
from agents.exchange.database import CHUNK, Database, parse_url
from agents.exchange.errors import Refused
from agents.exchange.keybox import KeyBox, load_secret
from agents.exchange.server import create_app
from agents.exchange.store import NONCE_TTL, Store
from vault.errors import TesseraError

from . import (  # noqa: F401
    SECRET,
    call,
    consent_jws,
    db_url_fixture,
    exchange_fixture,
    identity,
    random_delta,
    serve,
    update_jws,
)

BIG = {"w": [200, 100], "b": [100]}  # 20,100 values: two chunk boundaries... and a tail


def test_parse_url():
    assert parse_url("sqlite:///data/x.db") == ("sqlite", "data/x.db")
    assert parse_url("sqlite:////abs/x.db") == ("sqlite", "/abs/x.db")
    assert parse_url("plain.db") == ("sqlite", "plain.db")
    assert parse_url("postgres://u@h/db") == ("postgresql", "postgresql://u@h/db")
    assert parse_url("postgresql+psycopg://u@h/db") == ("postgresql", "postgresql://u@h/db")
    with pytest.raises(ValueError, match="unsupported"):
        parse_url("mysql://u@h/db")


def test_transaction_rolls_back_on_error(db_url):
    db = Database(db_url)
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute(
            "INSERT INTO organizations (did, name, admitted) VALUES (?, ?, ?)", ("d", "n", 1.0)
        )
        raise RuntimeError("boom")
    with db.transaction(write=False) as tx:
        assert tx.one("SELECT COUNT(*) FROM organizations") == (0,)
    db.close()


def test_sqlite_file_is_private(tmp_path):
    Store(f"sqlite:///{tmp_path / 'x.db'}").close()

    assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600


def test_keybox_wraps_keys_under_the_secret():
    org = identity()
    blob = KeyBox(SECRET).wrap(org.did, org.jwk)

    assert org.jwk.encode() not in blob
    assert KeyBox(SECRET).unwrap(org.did, blob) == org.jwk
    with pytest.raises(Refused, match="cannot unwrap"):
        KeyBox(b"t" * 32).unwrap(org.did, blob)
    with pytest.raises(Refused):
        KeyBox(SECRET).unwrap(identity().did, blob)  # bound to its DID


def test_load_secret_creates_a_private_file(tmp_path):
    path = tmp_path / "sub" / "exchange.secret"

    first = load_secret(path)

    assert len(first) == 32
    assert load_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_bytes(b"short")
    with pytest.raises(TesseraError, match="32 bytes"):
        load_secret(path)


def test_nonces_are_remembered_per_signer(db_url):
    store = Store(db_url)
    a, b = identity().did, identity().did

    assert store.remember_nonce(a, "00" * 8, 1000.0)
    assert not store.remember_nonce(a, "00" * 8, 1001.0)
    assert store.remember_nonce(b, "00" * 8, 1001.0)
    # pruned after the window (the skew check refuses such old calls anyway)
    assert store.remember_nonce(a, "00" * 8, 1000.0 + NONCE_TTL + 1)
    store.close()


@pytest.mark.parametrize("strategy", ["fedavg", "median"])
def test_aggregation_streams_across_chunk_boundaries(exchange, strategy):
    assert sum(np.prod(s) for s in BIG.values()) > CHUNK
    aggregation = {
        "strategy": strategy,
        "min_updates": 3,
        "round_seconds": 60,
        "max_update_norm": 100.0,
    }
    request, token = exchange.open_request(shapes=BIG, aggregation=aggregation)
    vaults = [exchange.consenting_vault(request, token) for _ in range(3)]
    deltas = [random_delta(seed=i, shapes=BIG) for i in range(3)]
    before = _params(exchange, vaults[0][0], request)

    for (vault, consent), delta in zip(vaults, deltas, strict=True):
        answer = exchange.submit(vault, request, update_jws(vault, request, consent, delta))
        assert answer.status_code == 200, answer.text

    after = _params(exchange, vaults[0][0], request)
    matrix = np.stack([np.concatenate([d["w"].ravel(), d["b"]]) for d in deltas])
    expected = aggregate.median(matrix) if strategy == "median" else matrix.mean(axis=0)
    got = np.concatenate([(after["w"] - before["w"]).ravel(), after["b"] - before["b"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _params(exchange, who, request):
    answer = call(exchange.client, who, "GET", f"/v1/requests/{request['id']}/round/params")
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_concurrent_submissions_count_once(db_url, tmp_path):
    app = create_app(db_url, secret=SECRET)
    org = identity()
    app.state.store.admit(org.did, "Org")
    n = 8
    with serve(app) as url:
        from fastapi.testclient import TestClient

        from . import Exchange

        with TestClient(app) as client:
            exchange = Exchange(app, client, org, tmp_path)
            aggregation = {
                "strategy": "fedavg",
                "min_updates": n,
                "round_seconds": 600,
                "max_update_norm": 10.0,
            }
            request, token = exchange.open_request(rounds=3, aggregation=aggregation)
            vaults = [exchange.consenting_vault(request, token) for _ in range(n)]
        updates = [
            update_jws(v, request, c, random_delta(seed=i)) for i, (v, c) in enumerate(vaults)
        ]
        answers: list[dict] = []

        def submit(i: int) -> None:
            client = ExchangeClient(url, vaults[i][0].jwk, backoff=0.05)
            answers.append(client.submit_update(request["id"], updates[i]))
            answers.append(client.submit_update(request["id"], updates[i]))  # a retry

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        org_client = ExchangeClient(url, org.jwk)
        deadline = time.monotonic() + 20  # aggregation runs in the background
        while org_client.status(request["id"])["round"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = org_client.status(request["id"])
    app.state.store.close()

    assert len(answers) == 2 * n and all(a["accepted"] for a in answers)
    assert status["round"] == 1
    assert status["per_round"][0]["accepted"] == n
    assert len(app.state.aggregations) == 1


def test_failed_aggregation_is_retried_on_the_next_fetch(exchange, monkeypatch):
    aggregation = {
        "strategy": "fedavg",
        "min_updates": 1,
        "round_seconds": 60,
        "max_update_norm": 10.0,
    }
    request, token = exchange.open_request(aggregation=aggregation)
    vault, consent = exchange.consenting_vault(request, token)
    import agents.exchange.service as service

    real = service.strategy_for
    monkeypatch.setattr(service, "strategy_for", lambda *_: (_ for _ in ()).throw(OSError("disk")))
    answer = exchange.submit(vault, request, update_jws(vault, request, consent, random_delta()))
    stuck = call(exchange.client, vault, "GET", f"/v1/requests/{request['id']}/round")
    monkeypatch.setattr(service, "strategy_for", real)
    call(exchange.client, vault, "GET", f"/v1/requests/{request['id']}/round")  # retries it
    recovered = call(exchange.client, vault, "GET", f"/v1/requests/{request['id']}/round")

    assert answer.status_code == 200  # the update was stored before aggregation failed
    assert stuck.json()["round"] == 0  # still answered; the failure is logged
    assert recovered.json()["round"] == 1
