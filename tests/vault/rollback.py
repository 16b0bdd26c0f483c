"""Putting an old vault.db back: the rollback that signed checkpoints must reveal."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import PASSPHRASE
from vault.core import Vault


@contextmanager
def copied_back(vault: Vault, vault_dir: Path) -> Iterator[Vault]:
    """Save ``vault``'s database (closing it), let the body write on, then put the copy back."""
    vault.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    vault.close()
    saved = vault_dir.parent / "old.db"
    shutil.copy(vault_dir / "vault.db", saved)
    with Vault.unlock(vault_dir, PASSPHRASE) as later:
        yield later
        later.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(saved, vault_dir / "vault.db")
