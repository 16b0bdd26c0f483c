"""`tessera identity|requests|consents|tasks|rewards` in process; a real exchange on loopback."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from agents.package import package_address
from identity.backup import read_backup
from identity.keys import b64url, b64url_decode, did_for
from tests.fixtures.training_requests import (
    activity_export,
    new_org,
    package_bytes,
    signed_request,
)
from vault.errors import WrongPassphrase


@pytest.fixture
def initialised(tessera, tmp_path):
    """A vault with 40 days of activity data, created through the CLI."""
    assert tessera("init").code == 0
    export = activity_export(tmp_path / "export.xml", days=40)
    assert tessera("import", str(export)).code == 0
    return tessera


def _request_file(tmp: Path, org: str, **overrides) -> tuple[Path, str]:
    package = package_bytes(tmp)
    token = signed_request(org, package_address(package), **overrides)
    path = tmp / f"request-{len(list(tmp.glob('request-*')))}.json"
    path.write_text(
        json.dumps(
            {
                "format": "tessera-request-file/1",
                "request": token,
                "package": base64.b64encode(package).decode(),
            }
        )
    )
    request_id = json.loads(b64url_decode(token.split(".")[1]))["jti"].removeprefix("urn:tessera:")
    return path, request_id


def _in_days(days: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%d")


def _json(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_identity_shows_the_did_document_and_exports_a_backup(initialised, tmp_path):
    shown = _json(initialised("identity", "--json"))
    assert shown["did"].startswith("did:key:z6Mk") and shown["document"]["id"] == shown["did"]
    out = tmp_path / "identity.backup"
    env = {"TESSERA_BACKUP_PASSWORD": "a long backup password"}
    assert initialised("identity", "export", "--out", str(out), env=env).code == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert did_for(read_backup(out, "a long backup password")) == shown["did"]
    with pytest.raises(WrongPassphrase):
        read_backup(out, "not the password")
    short = initialised(
        "identity", "export", "--out", str(tmp_path / "x"), env={"TESSERA_BACKUP_PASSWORD": "short"}
    )
    assert short.code == 1 and "at least" in short.err


def test_import_list_show_approve_deny_revoke(initialised, tmp_path):
    org = new_org()
    first, first_id = _request_file(tmp_path, org)
    second, second_id = _request_file(tmp_path, org, organization={"name": "Other Lab"})
    assert initialised("requests", "import", str(first)).code == 0
    assert "Already in the inbox" in initialised("requests", "import", str(first)).out
    assert initialised("requests", "import", str(second)).code == 0
    listed = _json(initialised("requests", "list", "--json"))
    assert {(r["id"], r["status"]) for r in listed} == {
        (first_id, "pending"),
        (second_id, "pending"),
    }

    human = initialised("requests", "show", first_id)
    assert human.code == 0
    assert "Sleep Lab asks to train a model with your data" in human.out
    assert "Your data stays on this computer. Only a noisy model update leaves" in human.out
    shown = _json(initialised("requests", "show", first_id, "--json"))
    assert shown["status"] == "pending" and shown["epsilon"] == 3.0

    too_much = initialised("requests", "approve", first_id, "--budget", "5")
    assert too_much.code == 1 and "at most" in too_much.err
    chosen = "health.step_count,health.sleep_analysis"
    consent = _json(
        initialised(
            "requests", "approve", first_id, "--datasets", chosen,
            "--budget", "1.5", "--expires", _in_days(10), "--json",
        )
    )  # fmt: skip
    assert consent["datasets"] == ["health.step_count", "health.sleep_analysis"]
    assert consent["state"] == "active" and consent["epsilon_budget"] == 1.5
    assert consent["expires"] == f"{_in_days(10)}T00:00:00Z"

    assert initialised("requests", "deny", second_id).code == 0
    again = initialised("requests", "approve", second_id)
    assert again.code == 1 and "denied" in again.err

    log = _json(initialised("log", "health.step_count", "--json"))
    assert log[-1]["action"] == "consent" and log[-1]["consent"] == consent["id"]

    listed = _json(initialised("consents", "list", "--json"))
    assert [(c["id"], c["state"]) for c in listed] == [(consent["id"], "active")]
    assert initialised("consents", "revoke", consent["id"]).code == 0
    assert _json(initialised("consents", "list", "--json"))[0]["state"] == "revoked"
    assert _json(initialised("log", "health.step_count", "--json"))[-1]["action"] == "revoke"
    assert initialised("verify").code == 0


def test_forged_and_broken_request_files_are_refused(initialised, tmp_path):
    org = new_org()
    path, _ = _request_file(tmp_path, org)
    data = json.loads(path.read_text())
    head, payload, sig = data["request"].split(".")
    changed = b64url_decode(payload).replace(b"Sleep Lab", b"Sleep Lad")
    data["request"] = f"{head}.{b64url(changed)}.{sig}"
    path.write_text(json.dumps(data))
    forged = initialised("requests", "import", str(path))
    assert forged.code == 1 and "bad signature" in forged.err
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    broken = initialised("requests", "import", str(garbage))
    assert broken.code == 1 and "not a request file" in broken.err
    expired, _ = _request_file(
        tmp_path, org, issued="2024-01-01T00:00:00Z", expires="2024-01-02T00:00:00Z"
    )
    late = initialised("requests", "import", str(expired))
    assert late.code == 1 and "expired" in late.err
    assert _json(initialised("requests", "list", "--json")) == []
    assert "Traceback" not in forged.err + broken.err + late.err


def test_settings_rewards_and_tasks_with_nothing_done(initialised):
    settings = _json(initialised("tasks", "settings", "--min-noise-multiplier", "2", "--json"))
    assert settings == {"noise_multiplier": 2.0}
    assert _json(initialised("tasks", "settings", "--clear", "--json")) == {}
    assert _json(initialised("tasks", "list", "--json")) == []
    assert "No rewards yet." in initialised("rewards").out
    assert _json(initialised("rewards", "verify", "--json"))["ok"] is True
    missing = initialised("tasks", "run", env={"TESSERA_EXCHANGE": None})
    assert missing.code == 2 and "--exchange" in missing.err


@pytest.fixture
def exchange(tmp_path):
    """A real exchange (FastAPI + uvicorn on 127.0.0.1) with one admitted organization."""
    from agents.exchange.server import create_app
    from tests.agents.exchange import serve

    app = create_app(f"sqlite:///{tmp_path / 'exchange.db'}", secret=b"s" * 32)
    org = new_org()
    app.state.store.admit(did_for(org), "Sleep Lab")
    with serve(app) as url:
        yield url, org
    app.state.store.close()


def test_sync_approve_run_and_rewards_against_a_real_exchange(initialised, tmp_path, exchange):
    from agents.exchange.client import ExchangeClient

    url, org = exchange
    package = package_bytes(tmp_path)
    token = signed_request(org, package_address(package))
    request_id = ExchangeClient(url, org).post_request(token, package)

    synced = _json(initialised("requests", "sync", "--exchange", url, "--json"))
    assert synced == [{"id": request_id, "result": "new", "reason": None}]
    again = _json(initialised("requests", "sync", "--json"))  # the URL is remembered
    assert again == [{"id": request_id, "result": "known", "reason": None}]
    assert initialised("requests", "approve", request_id).code == 0

    ran = _json(initialised("tasks", "run", "--once", "--device", "cpu", "--json"))
    assert [(r["round"], r["state"]) for r in ran] == [(0, "accepted")]
    ran = _json(initialised("tasks", "run", "--device", "cpu", "--json"))
    assert [(r["round"], r["state"]) for r in ran] == [(1, "accepted")]

    book = _json(initialised("rewards", "--json"))
    assert book["by_task"] == [
        {
            "request": request_id,
            "organization": did_for(org),
            "name": "Sleep Lab",
            "unit": "EUR",
            "total": 1.0,
            "receipts": 2,
        }
    ]
    assert "Per organization:" in initialised("rewards").out
    assert initialised("rewards", "verify").code == 0
    rounds = _json(initialised("tasks", "list", "--json"))
    assert {r["state"] for r in rounds} == {"accepted"}
    reads = [
        e for e in _json(initialised("log", "health.step_count", "--json")) if e["action"] == "read"
    ]
    assert [e["purpose"][-9:] for e in reads] == ["(round 1)", "(round 2)"]
    assert initialised("verify").code == 0
