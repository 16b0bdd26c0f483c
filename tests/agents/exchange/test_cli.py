"""`tessera exchange serve|admit` and the organization commands against a live exchange."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner, Result

from agents.exchange.server import create_app
from agents.exchange.store import Store
from app.commands.org_exchange import org_init, org_model, org_post, org_status
from vault.errors import TesseraError

from . import SECRET, free_port, identity, make_package, serve

REQUEST_TOML = """
purpose = "Learn how daily activity relates to resting heart rate."
datasets = ["health.step_count", "health.heart_rate"]
fields = ["value"]
recipe = "daily_activity"
label = "resting_heart_rate"
expires = {expires}
rounds = 2
local_steps = 5
batch_size = 8
learning_rate = 0.1
optimizer = "sgd"

[organization]
name = "Heart Lab"

[time_range]
from = 2024-01-01T00:00:00Z
to = 2024-12-31

[privacy]
epsilon = 3.0
delta = 1e-5
clip_norm = 1.0
noise_multiplier = 1.1

[reward]
per_update = 0.5
unit = "EUR"
cap = 5.0

[aggregation]
strategy = "median"
min_updates = 2
round_seconds = 3600
max_update_norm = 10.0
"""


def _org_files(tmp_path: Path, request_text: str) -> tuple[CliRunner, str, Path, Path, Path]:
    """(runner, did, key file, package file, request file) for the organization commands."""
    runner = CliRunner()
    key = tmp_path / "org.key.json"
    did = json.loads(runner.invoke(org_init, ["--out", str(key), "--json"]).output)["did"]
    package = tmp_path / "task.tpkg"
    package.write_bytes(make_package(tmp_path))
    toml = tmp_path / "request.toml"
    toml.write_text(request_text)
    return runner, did, key, package, toml


def _post_nowhere(tmp_path: Path, request_text: str) -> Result:
    """`tessera org post` of ``request_text`` to a closed port: refusals come before any call."""
    runner, _, key, package, toml = _org_files(tmp_path, request_text)
    closed = ["--exchange", "http://127.0.0.1:9", "--key", str(key)]
    return runner.invoke(org_post, [str(toml), "--package", str(package), *closed])


def test_admit_records_the_organization(tessera, tmp_path):
    org = identity()
    db = f"sqlite:///{tmp_path / 'ex.db'}"

    result = tessera("exchange", "admit", org.did, "--db", db, "--name", "Heart Lab", "--json")

    assert result.code == 0, result.err
    assert json.loads(result.out) == {"admitted": org.did, "name": "Heart Lab"}
    store = Store(db)
    assert store.organization(org.did) == "Heart Lab"
    store.close()


def test_admit_refuses_what_is_not_a_did_key(tessera, tmp_path):
    result = tessera(
        "exchange", "admit", "did:web:example.com", "--db", f"sqlite:///{tmp_path / 'x.db'}"
    )

    assert result.code == 1
    assert "not a did:key" in result.err


def test_org_init_writes_a_private_key_once(tmp_path):
    out = tmp_path / "org.key.json"
    runner = CliRunner()

    first = runner.invoke(org_init, ["--out", str(out), "--json"])
    second = runner.invoke(org_init, ["--out", str(out)])

    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["did"].startswith("did:key:z6Mk")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert isinstance(second.exception, TesseraError)


def test_org_post_status_and_model_against_a_live_exchange(tmp_path):
    runner, did, key, package, toml = _org_files(
        tmp_path, REQUEST_TOML.format(expires="2099-01-01T00:00:00Z")
    )
    app = create_app(f"sqlite:///{tmp_path / 'ex.db'}", secret=SECRET)
    app.state.store.admit(did, "Heart Lab")
    params = tmp_path / "params.npz"

    with serve(app) as url:
        common = ["--exchange", url, "--key", str(key)]
        posted = runner.invoke(org_post, [str(toml), "--package", str(package), *common, "--json"])
        request_id = json.loads(posted.output)["id"]
        status = runner.invoke(org_status, [request_id, *common, "--json"])
        human = runner.invoke(org_status, [request_id, *common])
        model = runner.invoke(org_model, [request_id, "--out", str(params), *common])
    app.state.store.close()

    assert posted.exit_code == 0, posted.output
    assert json.loads(status.output)["strategy"] == "median"
    assert "round 0 of 2" in human.output
    assert model.exit_code == 0, model.output
    with np.load(params, allow_pickle=False) as npz:
        assert npz["w"].shape == (4, 3)


def test_org_post_refuses_a_request_file_that_fills_its_own_id(tmp_path):
    result = _post_nowhere(
        tmp_path, 'id = "req-mine"\n' + REQUEST_TOML.format(expires="2099-01-01T00:00:00Z")
    )

    assert isinstance(result.exception, TesseraError)
    assert "leave ['id'] out" in str(result.exception)


def test_org_post_refuses_an_expired_request_before_sending(tmp_path):
    result = _post_nowhere(tmp_path, REQUEST_TOML.format(expires="2001-01-01T00:00:00Z"))

    assert "expired" in str(result.exception)


@pytest.mark.slow
def test_exchange_serve_answers_on_its_port(tmp_path):
    port = free_port()
    db = f"sqlite:///{tmp_path / 'ex.db'}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from app.cli import main; main(sys.argv[1:])",
            "exchange",
            "serve",
            "--port",
            str(port),
            "--db",
            db,
            "--secret-file",
            str(tmp_path / "secret"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        schema = None
        deadline = time.monotonic() + 30
        while schema is None and time.monotonic() < deadline and process.poll() is None:
            try:
                schema = requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).json()
            except requests.ConnectionError:
                time.sleep(0.1)
        unsigned = requests.get(f"http://127.0.0.1:{port}/v1/requests", timeout=5)
    finally:
        process.terminate()
        process.wait(10)
    assert schema is not None, process.stderr.read().decode()[-3000:] if process.stderr else ""
    assert "/v1/requests" in schema["paths"]
    assert unsigned.status_code == 401
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
