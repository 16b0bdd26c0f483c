"""A real kill -9 of a vault in the middle of a training round, and the rerun that follows.

A ``tessera tasks run`` process trains against a real exchange on loopback and is killed with
SIGKILL at chosen moments: before training (held at the exchange while it fetches the round's
parameters, after the round was recorded as started and the rows were read), during the
sandboxed training (as soon as the sandbox child exists), and after its update was accepted
(the exchange holds the answer back). After every kill the vault still opens and verifies, and
a fresh run converges: each round is accepted exactly once at the exchange, the privacy ledger
counts each trained round's steps once, there is one reward receipt per accepted round, and
``tessera verify`` and ``tessera rewards verify`` are clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agents.exchange.client import ExchangeClient
from agents.exchange.loopback import LoopbackServer
from agents.exchange.server import create_app
from agents.package import package_address
from agents.request_check import receive_request
from identity.keys import did_for
from tests.fixtures.training_requests import (
    activity_export,
    new_org,
    package_bytes,
    signed_request,
)
from vault import consent as vc
from vault import ledger as vl
from vault import task_state as ts
from vault.core import Vault

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

PASSPHRASE = "kill nine, then run again"
ROUNDS, LOCAL_STEPS = 5, 3
PARAMS = "/round/params"
UPDATES = "/updates"
CLI = "import sys; from app.cli import main; main(sys.argv[1:])"  # `tessera`, this Python


class Gate:
    """ASGI wrapper that holds one kind of call, before or after the exchange handles it, until
    released, so a kill lands at a known point of the vault's round."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rule: tuple[str, str, str] | None = None  # (method, path suffix, before|after)
        self.reached = threading.Event()
        self.release = threading.Event()

    def hold(self, method: str, suffix: str, when: str) -> None:
        self.reached.clear()
        self.release.clear()
        self.rule = (method, suffix, when)

    def open(self) -> None:
        self.rule = None
        self.release.set()

    async def _wait(self) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.01)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        rule = self.rule
        if (
            rule is None
            or scope["type"] != "http"
            or scope["method"] != rule[0]
            or not scope["path"].endswith(rule[1])
        ):
            await self.app(scope, receive, send)
            return
        if rule[2] == "before":
            self.reached.set()
            await self._wait()
            with contextlib.suppress(Exception):  # the caller is gone: never handle the call
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            return
        answer: list[dict] = []

        async def keep(message: dict) -> None:
            answer.append(message)

        await self.app(scope, receive, keep)  # stored, receipt issued, round aggregated
        self.reached.set()
        await self._wait()
        for message in answer:  # to a caller that is gone by now
            with contextlib.suppress(Exception):
                await send(message)


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class Setup:
    """One vault with an approved request, a gated exchange on loopback, and the CLI."""

    def __init__(self, tmp: Path, url: str, gate: Gate, exchange_db: Path) -> None:
        self.tmp, self.url, self.gate, self.exchange_db = tmp, url, gate, exchange_db
        self.folder = tmp / "vault"
        org = new_org()
        gate.app.state.store.admit(did_for(org), "Sleep Lab")
        package = package_bytes(tmp)
        token = signed_request(
            org,
            package_address(package),
            rounds=ROUNDS,
            local_steps=LOCAL_STEPS,
            reward={"per_update": 0.5, "unit": "EUR", "cap": 100.0},
        )
        self.request_id = ExchangeClient(url, org).post_request(token, package)
        vault, _ = Vault.create(self.folder, PASSPHRASE)
        try:
            vault.import_path(activity_export(tmp / "export.xml", days=40))
            client = ExchangeClient(url, vault.signing_key())
            for item in client.open_requests():
                receive_request(vault, item["request"], client.package(item["package"]), url)
            self.consent_id = vc.approve(vault, self.request_id).id
            self.did = vault.did
        finally:
            vault.close()
        self.env = {
            **os.environ,
            "TESSERA_VAULT": str(self.folder),
            "TESSERA_PASSPHRASE": PASSPHRASE,
            "TESSERA_EXCHANGE": url,
            "TESSERA_KDF_TIME_COST": "1",
        }

    def start(self) -> subprocess.Popen[str]:
        """A `tessera tasks run` process (one pass)."""
        return subprocess.Popen(
            [sys.executable, "-c", CLI, "tasks", "run", "--once", "--device", "cpu", "--json"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLI, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def exchange_rows(self) -> tuple[list[tuple[int, int]], int, bool]:
        """(round, accepted) of this vault's updates, its receipts, whether the task closed."""
        with contextlib.closing(
            sqlite3.connect(f"file:{self.exchange_db}?mode=ro", uri=True)
        ) as db:
            updates = db.execute(
                "SELECT round, accepted FROM updates WHERE vault = ? ORDER BY round", (self.did,)
            ).fetchall()
            (receipts,) = db.execute(
                "SELECT count(*) FROM receipts WHERE person = ?", (self.did,)
            ).fetchone()
            (closed,) = db.execute(
                "SELECT closed FROM requests WHERE id = ?", (self.request_id,)
            ).fetchone()
        return updates, receipts, bool(closed)


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.kill()  # SIGKILL, by the pid of the process this test started
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _answer(code: int, out: str, err: str) -> Any:
    """The JSON answer of a finished command that succeeded.

    Exit 0 is required: a process that had verified credentials through didkit's async API
    used to die at interpreter exit (SIGABRT/SIGSEGV) after printing its answer.
    """
    assert code == 0, (code, out, err[-2000:])
    return json.loads(out)


def _run_to_end(setup: Setup) -> list[dict[str, Any]]:
    proc = setup.start()
    out, err = proc.communicate(timeout=60)
    return _answer(proc.returncode, out, err)


def _converged(setup: Setup) -> int:
    """Check every invariant after a completed run; return how many rounds were accepted."""
    updates, receipts, _closed = setup.exchange_rows()
    rounds = [r for r, _ in updates]
    assert all(accepted == 1 for _, accepted in updates), updates
    assert len(rounds) == len(set(rounds)), f"a round accepted twice at the exchange: {updates}"
    assert receipts == len(rounds)

    vault = Vault.unlock(setup.folder, PASSPHRASE)
    try:
        mine = [r for r in ts.task_rounds(vault) if r["request"] == setup.request_id]
        accepted = sorted(r["round"] for r in mine if r["state"] == "accepted")
        assert accepted == sorted(rounds), mine
        assert {r["state"] for r in mine} <= {"accepted"}, mine
        assert ts.outbox_size(vault) == 0
        stored, _ = ts.consent_privacy(vault, setup.consent_id)
        steps = sum(r["steps"] for r in stored["records"]) if stored else 0
        assert steps == LOCAL_STEPS * len(accepted), (stored, mine)
        book = vl.ledger(vault)
        assert len(book["receipts"]) == len(accepted)
        assert len({r["round"] for r in mine if r["receipt"]}) == len(accepted)
    finally:
        vault.close()

    for args in (("verify", "--json"), ("rewards", "verify", "--json")):
        done = setup.cli(*args)
        assert _answer(done.returncode, done.stdout, done.stderr)["ok"], args
    return len(accepted)


def _after_kill(setup: Setup) -> tuple[dict[int, str], int, int]:
    """After a kill: the vault opens and verifies; (round -> state, outbox size, steps)."""
    done = setup.cli("verify", "--json")
    assert _answer(done.returncode, done.stdout, done.stderr)["ok"]
    vault = Vault.unlock(setup.folder, PASSPHRASE)
    try:
        states = {
            r["round"]: r["state"]
            for r in ts.task_rounds(vault)
            if r["request"] == setup.request_id
        }
        stored, _ = ts.consent_privacy(vault, setup.consent_id)
        steps = sum(r["steps"] for r in stored["records"]) if stored else 0
        return states, ts.outbox_size(vault), steps
    finally:
        vault.close()


@pytest.fixture
def setup(tmp_path):
    inner = create_app(f"sqlite:///{tmp_path / 'exchange.db'}", secret=os.urandom(32))
    gate = Gate(inner)
    server = LoopbackServer(gate)
    try:
        yield Setup(tmp_path, server.url, gate, tmp_path / "exchange.db")
    finally:
        gate.open()
        server.stop()
        inner.state.store.close()


def _kill_at_gate(setup: Setup, method: str, suffix: str, when: str) -> None:
    setup.gate.hold(method, suffix, when)
    proc = setup.start()
    deadline = time.monotonic() + 60
    try:
        while not setup.gate.reached.wait(0.01):
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate(timeout=30)
                pytest.fail(f"the run never reached the held call: {out} {err}")
        _kill(proc)
    finally:
        setup.gate.open()


def _kill_in_training(setup: Setup) -> bool:
    """Start a run and SIGKILL it as soon as its sandbox child exists; whether it landed."""
    proc = setup.start()
    child = None
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        found = [p for p in _children(proc.pid) if b"-I\0-c" in _cmdline(p)]
        if found:
            child = found[0]
            break
        time.sleep(0.002)
    if child is None:
        _answer(proc.returncode, *proc.communicate(timeout=30))
        return False
    _kill(proc)
    # the orphaned sandbox child sees its pipe close and goes away by itself
    gone = time.monotonic() + 10
    while _alive(child) and time.monotonic() < gone:
        time.sleep(0.01)
    assert not _alive(child), "the sandbox child outlived its killed parent"
    return True


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_a_vault_killed_anywhere_in_a_round_converges_on_the_next_run(setup):
    # 1. before training: the round is started and its rows were read, no update exists
    _kill_at_gate(setup, "GET", PARAMS, "before")
    states, outbox, steps = _after_kill(setup)
    assert list(states.values()) == ["started"] and outbox == 0 and steps == 0
    _run_to_end(setup)
    assert _converged(setup) == 1

    # 2. during the sandboxed training (retried if a run finished before its child was seen)
    landed = False
    for _attempt in range(2):
        landed = _kill_in_training(setup)
        if landed:
            break
        _converged(setup)
    assert landed, "no kill landed while the sandbox child was training"
    states, outbox, steps = _after_kill(setup)
    assert sorted(states.values()).count("started") == 1 and outbox == 0
    assert steps == LOCAL_STEPS * _converged_count(states)
    _run_to_end(setup)
    done = _converged(setup)

    # 3. after the update was accepted at the exchange, before the vault heard the answer
    _kill_at_gate(setup, "POST", UPDATES, "after")
    updates, receipts, _ = setup.exchange_rows()
    assert len(updates) == done + 1 and receipts == done + 1  # accepted, unknown to the vault
    states, outbox, steps = _after_kill(setup)
    assert sorted(states.values()).count("trained") == 1 and outbox == 1
    assert steps == LOCAL_STEPS * (done + 1)
    reports = _run_to_end(setup)  # re-sends from the outbox; the exchange answers as before
    assert any(r["state"] == "accepted" for r in reports), reports
    assert _converged(setup) >= done + 1  # and the next round, now open, ran too

    # the rest of the rounds run as usual; every round ends accepted exactly once
    while not setup.exchange_rows()[2]:
        _run_to_end(setup)
    _run_to_end(setup)  # sees the closed task
    assert _converged(setup) == ROUNDS


def _converged_count(states: dict[int, str]) -> int:
    return sum(state == "accepted" for state in states.values())
