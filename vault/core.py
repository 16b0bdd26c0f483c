"""The Vault: one unlocked vault folder and the operations a person runs on it.

This is the API both faces (CLI and GUI) call. It assembles the key file, the SQLCipher
database, the identity, the importers and the access log; it never prints and never imports Qt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from identity.keys import did_for, generate_key
from vault import db as vault_db
from vault import keyfile as kf
from vault.accesslog import AccessLog
from vault.datasets import (
    dataset_id,
    dataset_stats,
    delete_dataset,
    export_records,
    iter_records,
    list_datasets,
)
from vault.errors import VaultExists, VaultNotFound
from vault.fsutil import private_dir
from vault.importing import ImportSummary, run_import

ProgressFn = Callable[[int, int], None]


def kdf_for_new_vault() -> kf.KdfParams:
    """Calibrated Argon2id parameters; TESSERA_KDF_TIME_COST pins the time cost (tests).

    The memory cost never goes below 64 MiB, whatever the environment says.
    """
    pinned = os.environ.get("TESSERA_KDF_TIME_COST")
    if pinned:
        return kf.KdfParams(max(1, int(pinned)), kf.MIN_MEMORY_KIB, 1)
    return kf.calibrate()


class Vault:
    """An unlocked vault. Close it (or use it as a context manager) to drop the key."""

    def __init__(self, folder: Path, data_key: bytes, keyfile: kf.KeyFile) -> None:
        self.folder = folder
        self.keyfile = keyfile
        self._data_key = bytearray(data_key)
        self.conn = vault_db.connect(folder, data_key)
        did, jwk = self.conn.execute("SELECT did, jwk FROM identity WHERE id = 1").fetchone()
        self.did: str = did
        self._jwk: str = jwk
        id_key = hmac.new(data_key, b"tessera checkpoint log id", hashlib.sha256).digest()
        self.log = AccessLog(self.conn, folder, jwk, did, id_key)
        # A crash between a write's COMMIT and its checkpoint left its logs marked: sign them
        # now rather than at the next write to that dataset, which may never come.
        self.log.publish_unsigned()

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(cls, folder: Path, passphrase: str) -> tuple[Vault, str]:
        """Create a vault in ``folder``; return it and the recovery code (show it once)."""
        if (folder / kf.KEYFILE).exists() or (folder / vault_db.DBFILE).exists():
            raise VaultExists(f"a vault already exists in {folder}")
        private_dir(folder)
        data_key = secrets.token_bytes(32)
        recovery = kf.new_recovery_code()
        keyfile = kf.KeyFile.create(data_key, passphrase, recovery, kdf_for_new_vault())
        conn = vault_db.connect(folder, data_key, create=True)
        jwk = generate_key()
        with conn:
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO identity (id, did, jwk, created) VALUES (1, ?, ?, ?)",
                (did_for(jwk), jwk, time.time()),
            )
        conn.close()
        # The key file last: a folder without it is not a vault, so a crash leaves no half vault.
        keyfile.save(folder)
        return cls(folder, data_key, keyfile), recovery

    @classmethod
    def unlock(cls, folder: Path, passphrase: str) -> Vault:
        """Open with the passphrase; WrongPassphrase leaves every file untouched."""
        keyfile = kf.KeyFile.load(folder)
        return cls(folder, keyfile.unwrap_with_passphrase(passphrase), keyfile)

    @classmethod
    def unlock_with_key(cls, folder: Path, data_key: bytes) -> Vault:
        """Open with the raw data key (from the OS keyring)."""
        return cls(folder, data_key, kf.KeyFile.load(folder))

    @classmethod
    def recover(cls, folder: Path, recovery_code: str, new_passphrase: str) -> Vault:
        """Open with the recovery code and set a new passphrase."""
        keyfile = kf.KeyFile.load(folder)
        data_key = keyfile.unwrap_with_recovery_code(recovery_code)
        vault = cls(folder, data_key, keyfile)
        vault.change_passphrase(new_passphrase)
        return vault

    @staticmethod
    def exists(folder: Path) -> bool:
        """True when ``folder`` holds a vault."""
        return (folder / kf.KEYFILE).exists()

    def close(self) -> None:
        """Close the database and overwrite the key in memory."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None  # type: ignore[assignment]
        for i in range(len(self._data_key)):
            self._data_key[i] = 0

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def data_key(self) -> bytes:
        """The raw data key (for the OS keyring only)."""
        return bytes(self._data_key)

    def signing_key(self) -> str:
        """The vault identity's private JWK (for signing; never log it)."""
        return self._jwk

    def change_passphrase(self, new_passphrase: str) -> None:
        """Re-wrap the data key under a new passphrase (atomic key-file replace)."""
        self.keyfile.rewrap_passphrase(bytes(self._data_key), new_passphrase)
        self.keyfile.save(self.folder)

    # -- transactions --------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        """A write transaction; access-log checkpoints are signed after it commits."""
        return _Transaction(self)

    # -- data ----------------------------------------------------------------------------

    def import_path(
        self,
        path: Path,
        fmt: str | None = None,
        dataset: str | None = None,
        max_inflate: int | None = None,
        progress: ProgressFn | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> ImportSummary:
        """Import a file or archive in one transaction; ImportRefused leaves the vault as was."""
        with self.transaction():
            return run_import(self, path, fmt, dataset, max_inflate, progress, cancelled)

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset with kind, record count and time span."""
        return list_datasets(self.conn)

    def stats(self, name: str) -> dict[str, Any]:
        """Statistics of one dataset."""
        return dataset_stats(self.conn, name)

    def export(self, name: str, out: Path, fmt: str = "csv") -> dict[str, Any]:
        """Write a dataset to ``out`` (csv or json) and log the export."""
        with self.transaction():
            ident = dataset_id(self.conn, name)
            count, digest = export_records(out, iter_records(self.conn, ident), fmt)
            self.log.append(
                name, "export", self.did, f"export to {out.name} ({fmt})", count, digest
            )
        return {
            "dataset": name,
            "file": str(out),
            "format": fmt,
            "records": count,
            "sha256": digest,
        }

    def delete(self, name: str) -> dict[str, Any]:
        """Delete a dataset's records (its access history stays) and log the deletion."""
        with self.transaction():
            deleted = delete_dataset(self.conn, name)
            self.log.append(name, "delete", self.did, "deleted by the owner", deleted)
        return {"dataset": name, "deleted": deleted}

    def verify(self) -> dict[str, Any]:
        """Recompute every access-log root and check the signed checkpoints."""
        reports, problems = self.log.verify()
        return {
            "ok": not problems,
            "datasets": {
                name: {"entries": r.entries, "root": r.root, "ok": r.ok}
                for name, r in reports.items()
            },
            "problems": problems,
        }


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, then publish checkpoints; ROLLBACK on any exception."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    def __enter__(self) -> None:
        self._vault.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        conn = self._vault.conn
        if exc_type is not None:
            conn.execute("ROLLBACK")
            self._vault.log.discard_pending()
            return
        conn.execute("COMMIT")
        self._vault.log.publish_checkpoints()


def require_vault(folder: Path) -> None:
    """Raise VaultNotFound unless ``folder`` holds a vault."""
    if not Vault.exists(folder):
        raise VaultNotFound(f"no vault in {folder} (create one with `tessera init`)")
