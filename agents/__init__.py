"""Federated task runtime: task packages, the organization SDK, the model validator, the runner."""

from __future__ import annotations

import sys
from pathlib import Path

# The arguments that make a frozen bundle's executable run one of our helper processes instead
# of the app (a bundle has no Python interpreter to hand `-c`); see app/launcher.py.
SANDBOX_WORKER_ARG = "--tessera-sandbox-worker"
NOISE_WORKER_ARG = "--tessera-noise-worker"
# argument -> (module, function) that the helper process runs
WORKERS = {
    SANDBOX_WORKER_ARG: ("agents.sandbox_worker", "main"),
    NOISE_WORKER_ARG: ("agents.noise", "worker_main"),
}

_ROOT = str(Path(__file__).resolve().parent.parent)


def worker_command(arg: str) -> list[str]:
    """The argv that starts helper ``arg`` (a key of WORKERS) as a fresh, isolated process."""
    if getattr(sys, "frozen", False):
        return [sys.executable, arg]
    module, function = WORKERS[arg]
    boot = f"import sys; sys.path.insert(0, {_ROOT!r}); import {module} as m; m.{function}()"
    return [sys.executable, "-I", "-c", boot]
