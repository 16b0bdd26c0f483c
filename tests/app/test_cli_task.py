"""`tessera task run PACKAGE --dataset NAME`: the owner tries a package on their own data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.package import package_address
from agents.round_result import verify_result
from tests.fixtures.training_requests import FEATURES, activity_export, package_bytes

STEPS, HEART, SLEEP = "health.step_count", "health.heart_rate", "health.sleep_analysis"
DATASETS = f"{STEPS},{HEART},{SLEEP}"


@pytest.fixture
def initialised(tessera, tmp_path: Path):
    """A vault with 40 days of activity data and a preferences dataset, made through the CLI."""
    assert tessera("init").code == 0
    assert tessera("import", str(activity_export(tmp_path / "export.xml", days=40))).code == 0
    food = tmp_path / "food.csv"
    food.write_text("date,likes\n2024-01-01,pasta\n2024-01-02,rice\n", encoding="utf-8")
    assert tessera("import", str(food)).code == 0
    return tessera


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """The daily_activity / sleep_hours linear package, as a file."""
    path = tmp_path / "sleep.tpkg"
    path.write_bytes(package_bytes(tmp_path))
    return path


def _json(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def _reads(tessera, dataset: str) -> list[dict]:
    return [e for e in _json(tessera("log", dataset, "--json")) if e["action"] == "read"]


def test_the_owner_trains_on_their_datasets_and_each_log_shows_the_read(
    initialised, package, tmp_path
):
    did = _json(initialised("identity", "--json"))["did"]
    out = tmp_path / "results.json"

    run = initialised(
        "task", "run", str(package), "--dataset", DATASETS,
        "--local-steps", "2", "--rounds", "2", "--out", str(out), "--json",
    )  # fmt: skip

    report = _json(run)
    assert report["signer"] == did and report["ephemeral_key"] is False
    assert report["datasets"] == [STEPS, HEART, SLEEP] and report["examples"] >= 30
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    tokens = json.loads(out.read_text())["results"]
    signer, _ = verify_result(tokens[1], {"w": [FEATURES], "b": [1]}, did)
    assert signer == did
    purpose = f"local task run of {package_address(package.read_bytes())} by the owner"
    for name, rows in ((STEPS, 40), (HEART, 120), (SLEEP, 40)):
        (entry,) = _reads(initialised, name)  # one read per run, not one per round
        assert (entry["actor"], entry["purpose"], entry["rows"]) == (did, purpose, rows)
        assert entry["consent"] is None and len(entry["digest"]) == 64
    assert initialised("verify").code == 0


def test_a_dataset_the_recipe_does_not_read_is_refused_and_nothing_is_read(initialised, package):
    refused = initialised("task", "run", str(package), "--dataset", f"{STEPS},preferences.food")

    assert refused.code == 1
    assert refused.err.startswith("error: ") and "Traceback" not in refused.err
    assert "daily_activity does not read dataset 'preferences.food'" in refused.err
    assert _reads(initialised, STEPS) == [] and _reads(initialised, "preferences.food") == []


def test_a_missing_dataset_is_refused_before_any_read(initialised, package):
    missing = initialised(
        "task", "run", str(package), "--dataset", f"{STEPS},health.active_energy_burned"
    )

    assert missing.code == 1 and "no dataset named 'health.active_energy_burned'" in missing.err
    assert _reads(initialised, STEPS) == []


def test_exit_codes_follow_the_design(initialised, package, tmp_path):
    data = tmp_path / "data.npz"
    data.write_bytes(b"")
    wrong = initialised(
        "task", "run", str(package), "--dataset", STEPS,
        env={"TESSERA_PASSPHRASE": "not the passphrase"},
    )  # fmt: skip
    assert wrong.code == 3
    assert initialised("task", "run", str(package)).code == 2  # no data at all
    both = initialised("task", "run", str(package), "--dataset", STEPS, "--data", str(data))
    assert both.code == 2 and "not both" in both.err
    keyed = initialised(
        "task", "run", str(package), "--dataset", STEPS, "--key-file", str(tmp_path / "k.jwk")
    )
    assert keyed.code == 2 and "vault's key" in keyed.err
    assert _reads(initialised, STEPS) == []
