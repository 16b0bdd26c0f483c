"""The vault's SQL schema with a version number and forward migrations.

`PRAGMA user_version` holds the schema version. Each migration is a list of statements that
takes the schema from version N-1 to N, applied in one transaction. Never edit a released
migration: add a new one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[list[str]] = [
    # 1: identity, datasets, records, imports, access log
    [
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        """CREATE TABLE identity (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            did TEXT NOT NULL,
            jwk TEXT NOT NULL,
            created REAL NOT NULL)""",
        """CREATE TABLE datasets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            created REAL NOT NULL)""",
        """CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)""",
        """CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            file TEXT NOT NULL,
            format TEXT NOT NULL,
            started REAL NOT NULL,
            finished REAL,
            added INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE records (
            id INTEGER PRIMARY KEY,
            dataset_id INTEGER NOT NULL REFERENCES datasets(id),
            start REAL NOT NULL,
            end REAL,
            utc_offset INTEGER,
            value REAL,
            text TEXT,
            unit TEXT,
            lat REAL,
            lon REAL,
            source_id INTEGER REFERENCES sources(id),
            import_id INTEGER REFERENCES imports(id),
            extra TEXT,
            nkey BLOB NOT NULL)""",
        # Natural-key uniqueness makes re-imports idempotent (INSERT OR IGNORE).
        """CREATE UNIQUE INDEX records_nkey ON records (dataset_id, nkey)""",
        # Range scans, paging by key, first/last per dataset.
        """CREATE INDEX records_time ON records (dataset_id, start, id)""",
        """CREATE TABLE dataset_stats (
            dataset_id INTEGER PRIMARY KEY REFERENCES datasets(id),
            records INTEGER NOT NULL,
            first REAL, last REAL,
            sum REAL, min REAL, max REAL, count_value INTEGER NOT NULL DEFAULT 0,
            min_lat REAL, min_lon REAL, max_lat REAL, max_lon REAL,
            unit TEXT)""",
        """CREATE TABLE access_log (
            dataset TEXT NOT NULL,
            seq INTEGER NOT NULL,
            entry BLOB NOT NULL,
            leaf BLOB NOT NULL,
            PRIMARY KEY (dataset, seq)) WITHOUT ROWID""",
        """CREATE TABLE checkpoint_state (
            dataset TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            frontier TEXT NOT NULL)""",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema forward to SCHEMA_VERSION; return the version it started at."""
    start = conn.execute("PRAGMA user_version").fetchone()[0]
    if start > SCHEMA_VERSION:
        raise RuntimeError(
            f"vault schema version {start} is newer than this Tessera ({SCHEMA_VERSION});"
            " update Tessera"
        )
    for version in range(start + 1, SCHEMA_VERSION + 1):
        with conn:
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return start
