"""The session: which vault folder is open, the unlocked Vault, and signals screens follow.

Core events reach screens as Qt signals from here (as Electrum re-emits wallet events): a
screen never polls another screen. Locking cancels running work, closes the Vault (which
overwrites the key in memory) and tells every screen to forget what it showed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings, Signal

from app.gui.worker import WorkQueue

if TYPE_CHECKING:
    from vault.core import Vault

DEFAULT_IDLE_MINUTES = 5
SETTINGS_FILE = "gui-settings.ini"
# exchange calls run in the worker, but a person is waiting: one short retry, not the CLI's four
EXCHANGE_CLIENT = {"retries": 1, "backoff": 0.2}


def default_vault_dir() -> Path:
    """The same folder the CLI uses: $TESSERA_VAULT, else the user data folder."""
    import os

    from app.cli import default_vault_dir as cli_default

    env = os.environ.get("TESSERA_VAULT")
    return Path(env) if env else cli_default()


def vault_exists(folder: Path) -> bool:
    """True when ``folder`` holds a vault (checked without importing the crypto stack)."""
    return (folder / "vault.key.json").exists()


class Session(QObject):
    """One vault folder and, while unlocked, its open Vault."""

    unlocked = Signal()
    locked = Signal()
    data_changed = Signal()  # datasets were imported, exported, deleted
    history_changed = Signal()  # the access log grew
    requests_changed = Signal()  # the inbox or the consents changed
    tasks_changed = Signal()  # rounds ran, receipts arrived
    folder_changed = Signal()

    def __init__(self, folder: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.folder = folder
        self.vault: Vault | None = None
        self.work = WorkQueue(self)
        self._closing: list[Vault] = []  # locked, waiting for running work to return
        self.work.idle.connect(self._close_pending)

    # -- state ---------------------------------------------------------------------------

    def is_unlocked(self) -> bool:
        """True while a Vault is open."""
        return self.vault is not None

    def require(self) -> Vault:
        """The open Vault; VaultLocked if the session is locked."""
        if self.vault is None:
            from vault.errors import VaultLocked

            raise VaultLocked("the vault is locked")
        return self.vault

    def set_folder(self, folder: Path) -> None:
        """Point the session at another vault folder (locks first)."""
        self.lock()
        self.folder = folder
        self.folder_changed.emit()

    def open(self, vault: Vault) -> None:
        """Adopt a freshly unlocked or created Vault and tell the screens."""
        if self.vault is not None and self.vault is not vault:
            self.vault.close()
        self.vault = vault
        self.unlocked.emit()

    def lock(self) -> None:
        """Stop running work, close the Vault (dropping the key) and tell the screens.

        The screens forget everything at once. Work that cannot stop mid-step (a training
        round in the sandbox) is cancelled and the Vault closes as soon as it returns; closing
        the database under a running statement is never safe.
        """
        if self.vault is None:
            return
        vault, self.vault = self.vault, None
        # Imports roll back when cancelled; give them time to reach their next check.
        if self.work.cancel_all(wait_ms=3000):
            vault.close()
        else:
            self._closing.append(vault)
        self.locked.emit()

    def _close_pending(self) -> None:
        while self._closing:
            self._closing.pop().close()

    # -- settings that belong to this vault folder (not secret) --------------------------

    def settings(self) -> QSettings:
        """Per-vault GUI settings (auto-lock minutes, exchange address, compute device)."""
        return QSettings(str(self.folder / SETTINGS_FILE), QSettings.Format.IniFormat)

    def idle_minutes(self) -> float:
        """Minutes of inactivity before the vault locks itself."""
        try:
            return float(self.settings().value("lock/idle_minutes", DEFAULT_IDLE_MINUTES))
        except (TypeError, ValueError):
            return float(DEFAULT_IDLE_MINUTES)
