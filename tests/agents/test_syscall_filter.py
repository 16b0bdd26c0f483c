"""The sandbox child's seccomp filter: no new files, processes or sockets; threads still run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.agents.test_runner import _round, logistic_model

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, socket, threading
from agents.syscall_filter import install
print(install())
for name, attempt in [
    ("open", lambda: open("/etc/hostname").read()),
    ("create", lambda: open("made-by-the-model", "w")),
    ("fork", os.fork),
    ("socket", socket.socket),
    ("exec", lambda: os.execv("/bin/true", ["true"])),
]:
    try:
        attempt()
        print(name, "allowed")
    except PermissionError:
        print(name, "refused")
ran = []
thread = threading.Thread(target=lambda: ran.append(1))
thread.start()
thread.join()
print("thread", "ran" if ran else "did not run")
"""


def test_the_filter_refuses_files_processes_and_sockets_but_not_threads(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("seccomp"), result.stdout + result.stderr
    assert lines[1:] == [
        "open refused",
        "create refused",
        "fork refused",
        "socket refused",
        "exec refused",
        "thread ran",
    ]
    assert not (tmp_path / "made-by-the-model").exists()


def test_a_sandboxed_round_runs_under_the_filter():
    outcome = _round(logistic_model())
    assert outcome.result.examples_used > 0
    assert outcome.sandbox["syscalls"].startswith("seccomp"), outcome.sandbox
