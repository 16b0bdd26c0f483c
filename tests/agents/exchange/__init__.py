"""Helpers for the exchange tests: identities, packages, signed messages, a live server.

PostgreSQL: set TESSERA_TEST_POSTGRES_URL (``tests/pg_server.sh`` starts a throwaway cluster and
sets it) and the database-backed tests run against PostgreSQL as well as SQLite; each test gets
a fresh database of its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.exchange import format_time
from agents.exchange.auth import sign_call
from agents.exchange.loopback import LoopbackServer, free_port  # noqa: F401 - tests import it here
from agents.package import write_package
from identity.keys import did_for, generate_key, jws_sign
from identity.vc_jwt import LAYOUTS, from_credential, issue_credential

SHAPES = {"w": [4, 3], "b": [3]}
SECRET = b"s" * 32
PG_ENV = "TESSERA_TEST_POSTGRES_URL"


@dataclass(frozen=True)
class Identity:
    """A did:key identity for a test organization or vault."""

    jwk: str
    did: str


def identity() -> Identity:
    """A fresh did:key identity."""
    jwk = generate_key()
    return Identity(jwk, did_for(jwk))


def make_package(folder: Path, shapes: dict[str, list[int]] | None = None, seed: int = 0) -> bytes:
    """A real .tpkg (fake ONNX bytes: the exchange never parses the model) with random params."""
    shapes = shapes or SHAPES
    rng = np.random.default_rng(seed)
    task = {
        "format": "tessera-task/1",
        "name": "exchange-test",
        "params": [{"name": n, "shape": s, "dtype": "float32"} for n, s in shapes.items()],
        "batch_size": 8,
        "features": {"recipe": "daily_activity", "shape": [3], "dtype": "float32"},
        "label": {"field": "resting_heart_rate", "dtype": "float32", "classes": None},
        "loss": "mse",
        "files": {},
        "opset": 17,
        "flops_per_example": 0,
        "created_by": "tests",
    }
    params = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    path = folder / f"task-{secrets.token_hex(4)}.tpkg"
    write_package(path, task, b"not really onnx", params)
    return path.read_bytes()


def iso(delta: timedelta = timedelta()) -> str:
    """ISO Z time ``delta`` from now."""
    return format_time(datetime.now(UTC) + delta)


def request_payload(org: Identity, address: str, **overrides: Any) -> dict[str, Any]:
    """A valid training request payload; keyword arguments replace top-level fields."""
    payload = {
        "type": "TrainingRequest",
        "id": f"req-{uuid.uuid4().hex}",
        "issuer": org.did,
        "organization": {"name": "Test Org"},
        "issued": iso(),
        "expires": iso(timedelta(days=7)),
        "purpose": "Learn how activity relates to resting heart rate.",
        "datasets": ["health.step_count", "health.heart_rate"],
        "fields": ["value"],
        "time_range": {"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T00:00:00Z"},
        "recipe": "daily_activity",
        "label": "resting_heart_rate",
        "package": address,
        "rounds": 2,
        "local_steps": 5,
        "batch_size": 8,
        "learning_rate": 0.1,
        "optimizer": "sgd",
        "privacy": {"epsilon": 3.0, "delta": 1e-5, "clip_norm": 1.0, "noise_multiplier": 1.1},
        "reward": {"per_update": 0.5, "unit": "EUR", "cap": 10.0},
        "aggregation": {
            "strategy": "fedavg",
            "min_updates": 3,
            "round_seconds": 3600,
            "max_update_norm": 10.0,
        },
    }
    payload.update(overrides)
    return payload


def consent_jws(vault: Identity, request_jws: str, request: dict[str, Any], **extra: Any) -> str:
    """A consent receipt credential for ``request`` issued by ``vault``."""
    payload = {
        "type": "ConsentReceipt",
        "id": f"consent-{uuid.uuid4()}",
        "request": request["id"],
        "request_hash": hashlib.sha256(request_jws.encode()).hexdigest(),
        "subject": vault.did,
        "organization": request["issuer"],
        "datasets": request["datasets"],
        "epsilon_budget": 3.0,
        "issued": iso(),
        "expires": iso(timedelta(days=30)),
    }
    payload.update(extra)
    return credential(vault.jwk, payload)


def credential(jwk: str, payload: dict[str, Any]) -> str:
    """``payload`` as a VC-JWT signed with ``jwk``: issued by didkit when ``jwk`` is the issuer
    the payload names, written by hand (a forgery) when it is not."""
    from tests.fixtures.training_requests import forged_credential

    layout = LAYOUTS[payload["type"]]
    # consents and revocations name no issuer: a different subject is issued as it stands
    claimed = payload.get(layout.issuer) if layout.issuer else did_for(jwk)
    if claimed == did_for(jwk):
        return issue_credential(jwk, payload)
    return forged_credential(jwk, payload, claimed)


def payload_of(token: str) -> dict[str, Any]:
    """The flat payload of a credential (or the payload of a plain JWS), unverified."""
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    if isinstance(claims.get("vc"), dict):
        return from_credential(claims["vc"], claims["vc"]["type"][1])
    return claims


def encode_delta(delta: dict[str, np.ndarray]) -> dict[str, Any]:
    """Arrays as the round result encodes them."""
    return {
        name: {
            "dtype": "float32",
            "shape": list(array.shape),
            "data": base64.b64encode(np.asarray(array, dtype="<f4").tobytes()).decode(),
        }
        for name, array in delta.items()
    }


def update_jws(
    vault: Identity,
    request: dict[str, Any],
    consent: str,
    delta: dict[str, np.ndarray],
    round_index: int = 0,
    examples: int = 10,
    **extra: Any,
) -> str:
    """A signed update as the vault sends it (runner's field names plus request/round/consent)."""
    payload = {
        "format": "tessera-round/1",
        "package": request["package"],
        "delta": encode_delta(delta),
        "examples_used": examples,
        "privacy": {"epsilon_round": 0.5, "epsilon_total": 0.5, "epsilon_budget": 3.0},
        "request": request["id"],
        "round": round_index,
        "consent": payload_of(consent)["id"],
    }
    payload.update(extra)
    return jws_sign(vault.jwk, payload)


def random_delta(
    scale: float = 0.1, seed: int | None = None, shapes: dict[str, list[int]] | None = None
) -> dict[str, np.ndarray]:
    """A small random delta shaped like ``shapes`` (default :data:`SHAPES`)."""
    rng = np.random.default_rng(seed)
    shapes = shapes or SHAPES
    return {n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s in shapes.items()}


def signed_headers(who: Identity, method: str, target: str, body: bytes = b"") -> dict[str, str]:
    """Auth headers for a TestClient call."""
    headers = sign_call(who.jwk, who.did, method, target, body)
    if body:
        headers["Content-Type"] = "application/json"
    return headers


def call(client: Any, who: Identity, method: str, path: str, body: Any = None) -> Any:
    """One signed call through a FastAPI TestClient; returns the httpx response."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = signed_headers(who, method, path, data)
    return client.request(method, path, content=data or None, headers=headers)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 in a thread; yield its base URL."""
    with LoopbackServer(app, port, start_seconds=10) as server:
        yield server.url


def database_params() -> list[Any]:
    """pytest params for the database URL fixture: SQLite always, PostgreSQL when configured."""
    return [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} not set"),
        ),
    ]


@contextlib.contextmanager
def database_url(kind: str, folder: Path) -> Iterator[str]:
    """A fresh empty database of ``kind``: a SQLite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'exchange.db'}"
        return
    import psycopg

    admin = os.environ[PG_ENV]
    name = f"tessera_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield _with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass
class Exchange:
    """A running exchange app with a TestClient and one admitted organization."""

    app: Any
    client: Any
    org: Identity
    folder: Path

    def post(self, payload: dict[str, Any], package: bytes, who: Identity | None = None) -> Any:
        """``payload`` as a credential signed by ``who`` (the org), posted with ``package``."""
        who = who or self.org
        body = {
            "request": credential(who.jwk, payload),
            "package": base64.b64encode(package).decode(),
            "reward_key": who.jwk,
        }
        return call(self.client, who, "POST", "/v1/requests", body)

    def open_request(
        self, shapes: dict[str, list[int]] | None = None, **overrides: Any
    ) -> tuple[dict[str, Any], str]:
        """Post a valid request; return (payload, request JWS)."""
        from agents.package import package_address

        package = make_package(self.folder, shapes)

        payload = request_payload(self.org, package_address(package), **overrides)
        token = issue_credential(self.org.jwk, payload)
        body = {
            "request": token,
            "package": base64.b64encode(package).decode(),
            "reward_key": self.org.jwk,
        }
        answer = call(self.client, self.org, "POST", "/v1/requests", body)
        assert answer.status_code == 200, answer.text
        return payload, token

    def consenting_vault(self, request: dict[str, Any], token: str) -> tuple[Identity, str]:
        """A new vault that recorded a consent for the request; (vault, consent JWS)."""
        vault = identity()
        consent = consent_jws(vault, token, request)
        answer = call(self.client, vault, "POST", "/v1/consents", {"consent": consent})
        assert answer.status_code == 200, answer.text
        return vault, consent

    def submit(self, vault: Identity, request: dict[str, Any], update: str) -> Any:
        """Submit an update JWS as ``vault``; the response."""
        path = f"/v1/requests/{request['id']}/updates"
        return call(self.client, vault, "POST", path, {"update": update})


@pytest.fixture(name="db_url", params=database_params())
def db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL: SQLite, and PostgreSQL when TESSERA_TEST_POSTGRES_URL is set."""
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture(name="exchange")
def exchange_fixture(db_url: str, tmp_path: Path) -> Iterator[Exchange]:
    """An exchange app on ``db_url`` with an admitted organization and a TestClient."""
    from fastapi.testclient import TestClient

    from agents.exchange.server import create_app

    app = create_app(db_url, secret=SECRET)
    org = identity()
    app.state.store.admit(org.did, "Test Org")
    with TestClient(app) as client:
        yield Exchange(app, client, org, tmp_path)
    app.state.store.close()
