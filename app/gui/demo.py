"""The demo: a throwaway vault in a temporary folder, filled through the real importers.

Its passphrase is not secret (it is shown on the unlock screen of a demo vault), and the folder
is removed when the app quits.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings

from agents.vault_sync import client_for, set_exchange_url, sync_requests
from app.gui.demo_data import write_demo_files
from app.gui.demo_exchange import DemoExchange
from app.gui.session import EXCHANGE_CLIENT, SETTINGS_FILE
from app.gui.worker import CancelledFn, ProgressFn

if TYPE_CHECKING:
    from vault.core import Vault

DEMO_PASSPHRASE = "demo tessera walnut harbour"
HEALTH_DAYS = 120  # what write_demo_files covers


class DemoFolder:
    """A temporary folder holding the demo vault and its input files."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tessera-demo-")
        self.root = Path(self._tmp.name)
        self.vault = self.root / "vault"
        self.inputs = self.root / "inputs"
        self.exchange: DemoExchange | None = None

    def cleanup(self) -> None:
        """Stop the demo exchange and remove the demo folder and everything in it."""
        if self.exchange is not None:
            self.exchange.stop()
            self.exchange = None
        self._tmp.cleanup()


def create_demo_vault(
    demo: DemoFolder,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
    exchange: bool = True,
) -> Vault:
    """Create the demo vault, import the synthetic files, and (with ``exchange``) start the
    demo exchange and fetch its two requests into the inbox; return the vault unlocked."""
    from vault.core import Vault

    files = write_demo_files(demo.inputs)
    vault, _recovery = Vault.create(demo.vault, DEMO_PASSPHRASE)
    settings = QSettings(str(demo.vault / SETTINGS_FILE), QSettings.Format.IniFormat)
    settings.setValue("demo/passphrase", DEMO_PASSPHRASE)
    settings.sync()
    try:
        for number, path in enumerate(files):
            if progress is not None:
                progress(number, len(files))
            vault.import_path(path, cancelled=cancelled)
        if exchange:
            demo.exchange = DemoExchange(demo.root)
            demo.exchange.post_demo_requests(days=HEALTH_DAYS)
            set_exchange_url(vault, demo.exchange.url)
            sync_requests(vault, client_for(vault, **EXCHANGE_CLIENT))
    except BaseException:
        vault.close()
        raise
    return vault
