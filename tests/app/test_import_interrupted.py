"""An import interrupted by Ctrl-C, a kill, or the cancel button keeps nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.fixtures.apple_health import generate_large_export
from vault.core import Vault
from vault.importing import ImportCancelled


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "export.xml"
    generate_large_export(path, 40)
    return path


def _tessera(vault_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "TESSERA_VAULT": str(vault_dir), "TESSERA_PASSPHRASE": PASSPHRASE}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "tessera"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_until_importing(proc: subprocess.Popen, size: int) -> None:
    """Wait until the process has read about a third of the input (from /proc/PID/io)."""
    io_file = Path(f"/proc/{proc.pid}/io")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        fields = dict(line.split(": ") for line in io_file.read_text().splitlines())
        if int(fields["rchar"]) > size // 3:
            return
        time.sleep(0.02)
    pytest.fail("the import finished before it could be interrupted")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_import_leaves_the_vault_as_it_was(
    how: signal.Signals, vault_dir: Path, big_export: Path
) -> None:
    Vault.create(vault_dir, PASSPHRASE)[0].close()
    proc = _tessera(vault_dir, "import", str(big_export))
    _wait_until_importing(proc, big_export.stat().st_size)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert b"Traceback" not in err
    with Vault.unlock(vault_dir, PASSPHRASE) as vault:
        assert vault.datasets() == []
        assert vault.conn.execute("SELECT count(*) FROM records").fetchone()[0] == 0
        assert vault.verify()["ok"]


def test_cancel_keeps_nothing(vault: Vault, big_export: Path) -> None:
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(ImportCancelled):
        vault.import_path(big_export, cancelled=cancelled)
    assert vault.datasets() == []
    assert vault.verify()["ok"]
