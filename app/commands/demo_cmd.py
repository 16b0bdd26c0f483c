"""`tessera demo`: the whole loop on this computer, told as a story.

An exchange starts on 127.0.0.1; an organization is admitted, exports a small model with the
SDK (torch, the ``org`` extra) and posts a training request for ``daily_activity``. Three
people (Alice, Bob, Carol) each get a vault with their own synthetic health data. Alice and Bob
approve, Carol denies. Three federated rounds run; after each, the organization measures its
model on held-out data. Then Bob revokes, and the next round runs without him. Finally every
vault's access logs and rewards are checked. :func:`run_demo` returns the facts it printed, so
the end-to-end test runs the same story.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

from identity.keys import did_for, generate_key
from identity.summary import plain_summary
from identity.vc_jwt import issue_credential
from vault.recipes import Record, get_recipe

PASSPHRASE = "demo passphrase, not for real data"
START = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1)))
DAYS = 120
DATASETS = [
    "health.step_count",
    "health.heart_rate",
    "health.resting_heart_rate",
    "health.sleep_analysis",
]
FIELDS = ["steps", "resting_heart_rate", "mean_heart_rate"]
ROUNDS, LOCAL_STEPS, BATCH = 4, 5, 16
REWARD = {"per_update": 1.0, "unit": "credits", "cap": 3.0}
Say = Callable[[str], None]


# ---------------------------------------------------------------------- synthetic people


def synthetic_days(seed: int, days: int = DAYS) -> list[dict[str, Any]]:
    """Days of one synthetic person: steps, heart rate, and sleep that follows activity."""
    rng = random.Random(seed)
    sleeper = rng.uniform(-0.4, 0.4)  # some people sleep a little more than others
    out = []
    for day in range(days):
        base = START + timedelta(days=day)
        steps = max(500, int(rng.gauss(8_000, 3_000)))
        rest = 55 + rng.uniform(-4, 4) + (3 if steps < 5_000 else 0)
        sleep = 5.6 + sleeper + steps / 6_000 - (rest - 55) / 20 + rng.gauss(0, 0.3)
        out.append(
            {
                "start": base,
                "steps": steps,
                "resting": rest,
                "heart": [rest + 10 + steps / 800 + rng.uniform(-5, 5) for _ in range(4)],
                "sleep": min(max(sleep, 3.0), 11.0),
            }
        )
    return out


def _apple(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


def _record(kind: str, start: datetime, end: datetime, value: str, unit: str | None) -> str:
    unit_attr = f' unit="{unit}"' if unit else ""
    return (
        f' <Record type="{kind}" sourceName="Demo Phone"{unit_attr} startDate="{_apple(start)}"'
        f' endDate="{_apple(end)}" value="{value}"/>\n'
    )


def write_export(path: Path, days: list[dict[str, Any]]) -> Path:
    """An Apple Health export.xml holding ``days`` (what the Health app would write)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>\n<HealthData locale="en_US">\n']
    lines.append(f' <ExportDate value="{_apple(START + timedelta(days=len(days)))}"/>\n')
    q = "HKQuantityTypeIdentifier"
    for d in days:
        noon = d["start"] + timedelta(hours=12)
        lines.append(
            _record(f"{q}StepCount", noon, noon + timedelta(hours=1), str(d["steps"]), "count")
        )
        lines.append(
            _record(f"{q}RestingHeartRate", noon, noon, f"{d['resting']:.0f}", "count/min")
        )
        for i, bpm in enumerate(d["heart"]):
            at = d["start"] + timedelta(hours=8 + 3 * i)
            lines.append(_record(f"{q}HeartRate", at, at, f"{bpm:.0f}", "count/min"))
        wake = d["start"] + timedelta(hours=7)
        lines.append(
            _record(
                "HKCategoryTypeIdentifierSleepAnalysis",
                wake - timedelta(hours=d["sleep"]),
                wake,
                "HKCategoryValueSleepAnalysisAsleepCore",
                None,
            )
        )
    lines.append("</HealthData>\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def as_records(days: list[dict[str, Any]]) -> dict[str, list[Record]]:
    """The same days as recipe records (the organization's own held-out data)."""
    rows: dict[str, list[Record]] = {name: [] for name in DATASETS}
    for d in days:
        noon = d["start"].timestamp() + 12 * 3600
        rows["health.step_count"].append(Record(noon, noon + 3600, 60, float(d["steps"])))
        rows["health.resting_heart_rate"].append(Record(noon, noon, 60, round(d["resting"])))
        for i, bpm in enumerate(d["heart"]):
            at = d["start"].timestamp() + (8 + 3 * i) * 3600
            rows["health.heart_rate"].append(Record(at, at, 60, float(round(bpm))))
        wake = d["start"].timestamp() + 7 * 3600
        asleep = "HKCategoryValueSleepAnalysisAsleepCore"
        rows["health.sleep_analysis"].append(
            Record(wake - d["sleep"] * 3600, wake, 60, text=asleep)
        )
    return rows


# ---------------------------------------------------------------------- organization side


def build_package(folder: Path) -> bytes:
    """The organization's task: linear regression of sleep hours, exported with the SDK."""
    import torch

    from agents.sdk.export import export_task
    from agents.sdk.models import logistic_regression

    path = folder / "sleep.tpkg"
    model = logistic_regression(6, 1)  # one linear layer with one output: a regressor
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # start from zero so the held-out error starts the same every run
    export_task(
        model, "mse", "daily_activity", [6], "sleep_hours", "float32", None, BATCH, path,
        name="sleep-from-activity",
    )  # fmt: skip
    return path.read_bytes()


def held_out_loss(package: bytes, params: dict[str, np.ndarray]) -> float:
    """Mean squared error of ``params`` on a held-out synthetic person, through the graph."""
    import onnxruntime as ort

    from agents.package import read_package

    pkg = read_package(package)
    features = get_recipe("daily_activity").build(
        as_records(synthetic_days(999)), FIELDS, "sleep_hours"
    )
    session = ort.InferenceSession(pkg.model_bytes, providers=["CPUExecutionProvider"])
    batch = pkg.task["batch_size"]
    losses = []
    for first in range(0, len(features), batch):
        x = features.x[first : first + batch]
        y = features.y[first : first + batch]
        n = len(x)
        feeds = {name: np.asarray(value, np.float32) for name, value in params.items()}
        feeds["features"] = np.zeros((batch, *x.shape[1:]), np.float32)
        feeds["features"][:n] = x
        feeds["labels"] = np.zeros(batch, np.float32)
        feeds["labels"][:n] = y
        feeds["mask"] = (np.arange(batch) < n).astype(np.float32)
        losses.extend(session.run(["losses"], feeds)[0][:n].tolist())
    return float(np.mean(losses))


def request_payload(org: str, address: str, now: datetime) -> dict[str, Any]:
    """The organization's training request."""
    return {
        "type": "TrainingRequest",
        "id": f"req-{uuid.uuid4().hex}",
        "issuer": did_for(org),
        "organization": {"name": "Sleep Research Lab"},
        "issued": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires": (now + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "purpose": "Learn how daily activity and heart rate relate to how long people sleep.",
        "datasets": DATASETS,
        "fields": FIELDS,
        "time_range": {"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T00:00:00Z"},
        "recipe": "daily_activity",
        "label": "sleep_hours",
        "package": address,
        "rounds": ROUNDS,
        "local_steps": LOCAL_STEPS,
        "batch_size": BATCH,
        "learning_rate": 0.3,
        "optimizer": "sgd",
        "privacy": {"epsilon": 4.0, "delta": 1e-5, "clip_norm": 1.0, "noise_multiplier": 1.2},
        "reward": REWARD,
        "aggregation": {
            "strategy": "fedavg",
            "min_updates": 2,
            "round_seconds": 600,
            "max_update_norm": 10.0,
        },
    }


@contextlib.contextmanager
def exchange_on_loopback(folder: Path) -> Iterator[tuple[str, Any]]:
    """A real exchange (FastAPI + uvicorn) on a free 127.0.0.1 port; yields (URL, app)."""
    from agents.exchange.loopback import LoopbackServer
    from agents.exchange.server import create_app

    app = create_app(f"sqlite:///{folder / 'exchange.db'}")
    try:
        with LoopbackServer(app) as server:
            yield server.url, app
    finally:
        app.state.store.close()


# ---------------------------------------------------------------------- the story


def _reads(vault: Any) -> list[dict[str, Any]]:
    return [e for d in DATASETS for e in _entries(vault, d) if e["action"] == "read"]


def _entries(vault: Any, dataset: str) -> list[dict[str, Any]]:
    from vault.errors import DatasetNotFound

    try:
        return vault.log.entries(dataset)
    except DatasetNotFound:
        return []


def _wait_for_round(client: Any, request_id: str, index: int, timeout: float = 60.0) -> None:
    """Wait until the exchange has opened round ``index`` (or closed the request).

    The exchange aggregates in the background after answering the update that made a round
    due, so a model fetched at once may still be the previous round's.
    """
    deadline = time.monotonic() + timeout
    while True:
        view = client.current_round(request_id)
        if view["closed"] or view["round"] >= index:
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"the exchange did not open round {index + 1} in time")
        time.sleep(0.05)


def run_demo(folder: Path, device: str = "auto", say: Say = click.echo) -> dict[str, Any]:
    """Run the story in ``folder``; return the facts (losses, reads, rewards, checks)."""
    from agents.exchange.client import ExchangeClient
    from agents.package import package_address, read_package
    from agents.request_check import receive_request
    from agents.rounds import run_due_rounds
    from vault import consent as vc
    from vault import ledger as vl
    from vault.core import Vault

    facts: dict[str, Any] = {"losses": [], "people": {}}
    with exchange_on_loopback(folder) as (url, app):
        say(f"1. An exchange runs at {url}.")
        org = generate_key()
        app.state.store.admit(did_for(org), "Sleep Research Lab")
        say(f"2. The operator admits Sleep Research Lab ({did_for(org)[:32]}…).")
        package = build_package(folder)
        org_client = ExchangeClient(url, org)
        payload = request_payload(org, package_address(package), datetime.now(UTC))
        token = issue_credential(org, payload)
        request_id = org_client.post_request(token, package)
        initial = read_package(package).params
        facts["losses"].append(held_out_loss(package, initial))
        say(f"3. It exports a model with the SDK and posts request {request_id}.")
        say(f"   Held-out error of the untrained model: {facts['losses'][0]:.3f}")

        people = {}
        for seed, name in enumerate(("alice", "bob", "carol")):
            vault, _ = Vault.create(folder / name, PASSPHRASE)
            vault.import_path(write_export(folder / f"{name}-export.xml", synthetic_days(seed)))
            client = ExchangeClient(url, vault.signing_key())
            for item in client.open_requests():
                receive_request(vault, item["request"], client.package(item["package"]), url)
            people[name] = (vault, client)
        summary = plain_summary(vc.get_request(people["alice"][0], request_id).request)
        say("4. Alice, Bob and Carol each import their health data and see the request:")
        for key in ("who", "why", "data_text", "time_range", "privacy", "reward"):
            say(f"     {summary[key]}")
        for name in ("alice", "bob"):
            vc.approve(people[name][0], request_id)
        vc.deny(people["carol"][0], request_id)
        say("5. Alice and Bob approve. Carol denies.")

        for rnd in range(3):
            for vault, client in people.values():
                run_due_rounds(vault, client, device=device)
            _wait_for_round(org_client, request_id, rnd + 1)
            loss = held_out_loss(package, org_client.model(request_id))
            facts["losses"].append(loss)
            say(f"6. Round {rnd + 1} done: held-out error {loss:.3f}")

        bob = people["bob"][0]
        consent = vc.consent_for_request(bob, request_id)
        vc.revoke(bob, consent.id)
        say("7. Bob revokes his consent. The next round runs without him:")
        reports = {}
        for name in ("bob", "alice"):
            vault, client = people[name]
            reports[name] = run_due_rounds(vault, client, device=device)
        facts["after_revocation"] = reports
        say(f"     Alice: {[(r['round'], r['state']) for r in reports['alice']]}")
        say(f"     Bob: {reports['bob'] or 'nothing run'}")

        say("8. What each vault shows:")
        for name, (vault, _client) in people.items():
            reads = _reads(vault)
            book = vl.ledger(vault)
            total = book["by_task"][0]["total"] if book["by_task"] else 0.0
            facts["people"][name] = {
                "reads": sorted({e["purpose"].rsplit("(round ", 1)[-1].rstrip(")") for e in reads}),
                "read_entries": len(reads),
                "last_actions": {
                    d: (_entries(vault, d) or [{}])[-1].get("action") for d in DATASETS
                },
                "verify": vault.verify()["ok"],
                "rewards": total,
                "rewards_verify": vl.verify_ledger(vault)["ok"],
                "receipts": len(book["receipts"]),
            }
            f = facts["people"][name]
            rounds = ", ".join(f["reads"]) or "none"
            say(
                f"     {name.title()}: task reads in rounds {rounds}; logs verify: {f['verify']};"
                f" rewards {total:g} {REWARD['unit']} in {f['receipts']} signed receipts"
                f" (verified: {f['rewards_verify']})"
            )
        improved = facts["losses"][-1] < facts["losses"][0]
        say(
            f"9. The organization's model {'improved' if improved else 'did NOT improve'}:"
            f" held-out error {facts['losses'][0]:.3f} -> {facts['losses'][-1]:.3f}."
        )
        for vault, _ in people.values():
            vault.close()
    return facts


@click.command("demo")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "gpu", "auto"]), default="auto")
def demo(folder: Path | None, device: str) -> None:
    """Run the whole loop on this computer: exchange, organization, three vaults."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        run_demo(folder, device)
        click.echo(f"Everything is kept in {folder}.")
        return
    workdir = Path(tempfile.mkdtemp(prefix="tessera-demo-"))
    try:
        run_demo(workdir, device)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
