"""Shared fixtures: throwaway vaults, an in-process `tessera` runner, fixture files."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# Fast but still memory-hard KDF for tests (64 MiB, one pass); see vault.core.kdf_for_new_vault.
os.environ.setdefault("TESSERA_KDF_TIME_COST", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    """A folder path for a new vault (not yet created)."""
    return tmp_path / "vault"


@pytest.fixture
def vault(vault_dir: Path):
    """A freshly created, unlocked vault; closed after the test."""
    from vault.core import Vault

    created, _ = Vault.create(vault_dir, PASSPHRASE)
    yield created
    created.close()


@dataclass
class CliResult:
    """Exit code and captured output of one in-process `tessera` run."""

    code: int
    out: str
    err: str


@pytest.fixture
def tessera(
    vault_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run `tessera ARGS` in process against ``vault_dir`` with the test passphrase."""
    from app.cli import main

    def run(*args: str, env: dict[str, str | None] | None = None) -> CliResult:
        monkeypatch.setenv("TESSERA_VAULT", str(vault_dir))
        monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
        for key, value in (env or {}).items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by name, for byte-identical comparisons."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
