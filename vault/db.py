"""Opening the SQLCipher database with the raw data key, and its pragmas."""

from __future__ import annotations

import os
from pathlib import Path

import sqlcipher3
from sqlcipher3 import dbapi2

from vault.errors import WrongPassphrase
from vault.schema import migrate

DBFILE = "vault.db"
Connection = dbapi2.Connection
DatabaseError = dbapi2.DatabaseError


def connect(folder: Path, data_key: bytes, create: bool = False) -> Connection:
    """Open `vault.db` with ``data_key`` as a raw SQLCipher key and migrate the schema.

    Raises WrongPassphrase when the key does not open the file (SQLCipher reports that as
    "file is not a database" on the first read) — nothing is written in that case.
    """
    path = folder / DBFILE
    if not create and not path.exists():
        from vault.errors import VaultNotFound

        raise VaultNotFound(f"{path} is missing")
    if create:
        # Create the file 0600 before SQLCipher opens it.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        # SQLCipher logs HMAC failures to stderr on a wrong key; we report it ourselves.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{data_key.hex()}'\"")
        # Fail fast on a wrong key, before any pragma could write.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except DatabaseError:
        conn.close()
        raise WrongPassphrase() from None
    # Page HMACs are on by default in SQLCipher 4; keep temp data in memory, never in a
    # plaintext temp file; WAL for concurrent readers (its pages are encrypted too).
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -65536")
    # cipher_memory_security (wipe every freed allocation) stays at SQLCipher's default OFF:
    # measured here it made bulk inserts 5x slower; the key itself is still wiped on close.
    try:
        migrate(conn)
    except DatabaseError:
        conn.close()
        raise
    return conn
