"""A frozen bundle has no Python to hand `-c`: its own executable must serve as the sandbox
child and as the noise helper."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agents import NOISE_WORKER_ARG, SANDBOX_WORKER_ARG, worker_command
from agents.noise import NoiseAhead
from agents.sandbox import _worker_command
from tests.agents.test_runner import _round, logistic_model

ROOT = Path(__file__).resolve().parents[2]


def test_source_checkout_starts_the_worker_with_isolated_python():
    command = _worker_command()
    assert command[:3] == [sys.executable, "-I", "-c"]


def _frozen_app(tmp_path, monkeypatch) -> Path:
    """Stand-in for the bundle's executable (the launcher the bundle is built from), as
    sys.executable of a frozen app."""
    app = tmp_path / "tessera"
    app.write_text(
        f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} {ROOT / "app" / "launcher.py"} "$@"\n'
    )
    app.chmod(0o755)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(app))
    return app


def test_frozen_app_runs_a_real_round_through_its_launcher(tmp_path, monkeypatch):
    app = _frozen_app(tmp_path, monkeypatch)
    assert _worker_command() == [str(app), SANDBOX_WORKER_ARG]
    assert worker_command(NOISE_WORKER_ARG) == [str(app), NOISE_WORKER_ARG]
    outcome = _round(logistic_model())
    assert outcome.result.examples_used > 0
    assert all(np.all(np.isfinite(p)) for p in outcome.params.values())


@pytest.mark.parametrize("argv", [[], ["--version"]])
def test_launcher_without_the_worker_argument_is_the_app(argv, monkeypatch):
    import app.launcher

    seen = []
    monkeypatch.setattr(sys, "argv", ["tessera", *argv])
    monkeypatch.setattr("app.cli.main", lambda args: seen.append(args))
    app.launcher.launch()
    assert seen == [argv or ["gui"]]


def test_frozen_app_runs_the_noise_helper_through_its_launcher(tmp_path, monkeypatch):
    _frozen_app(tmp_path, monkeypatch)
    with NoiseAhead(100_000, 2.0, helpers=1) as noise:
        means = [np.zeros(100_000, np.float32)]
        noise.add_to(means)
        assert noise.mode == "helper process"  # it answered: the launcher became the helper
    assert abs(means[0].std() / 2.0 - 1) < 0.05
