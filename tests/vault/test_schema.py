"""Schema versioning: fresh databases reach the newest version; newer ones are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vault.db import connect
from vault.errors import VaultIncompatible
from vault.schema import MIGRATIONS, SCHEMA_VERSION, migrate


def test_new_database_is_at_the_newest_version(tmp_path: Path) -> None:
    conn = connect(tmp_path, os.urandom(32), create=True)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)


def test_migrations_apply_forward_from_each_older_version(tmp_path: Path) -> None:
    import sqlcipher3

    for start in range(SCHEMA_VERSION):
        conn = sqlcipher3.connect(":memory:", isolation_level=None)
        for version in range(1, start + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {start}")
        assert migrate(conn) == start
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_database_from_a_newer_tessera_is_refused(tmp_path: Path) -> None:
    import sqlcipher3

    conn = sqlcipher3.connect(":memory:", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(VaultIncompatible, match="newer"):
        migrate(conn)
