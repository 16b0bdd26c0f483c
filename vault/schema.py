"""The vault's SQL schema with a version number and forward migrations.

`PRAGMA user_version` holds the schema version. Each migration is a list of statements that
takes the schema from version N-1 to N, applied in one transaction. Never edit a released
migration: add a new one.
"""

from __future__ import annotations

import sqlite3

from vault.errors import VaultIncompatible

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
    # 2: training requests, consents, task rounds and their outbox, reward receipts
    [
        # verified requests with their checked package; status pending/approved/denied/revoked
        """CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            jws TEXT NOT NULL,
            hash TEXT NOT NULL,
            issuer TEXT NOT NULL,
            expires REAL NOT NULL,
            package_address TEXT NOT NULL,
            package BLOB NOT NULL,
            source TEXT NOT NULL,
            status TEXT NOT NULL,
            received REAL NOT NULL,
            decided REAL)""",
        # privacy = the task's privacy ledger (agents.accounting) as JSON: steps spent so far
        """CREATE TABLE consents (
            id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL UNIQUE REFERENCES requests(id),
            jws TEXT NOT NULL,
            datasets TEXT NOT NULL,
            epsilon_budget REAL NOT NULL,
            issued REAL NOT NULL,
            expires REAL NOT NULL,
            revoked REAL,
            revocation TEXT,
            sent INTEGER NOT NULL DEFAULT 0,
            revocation_sent INTEGER NOT NULL DEFAULT 0,
            privacy TEXT,
            finished REAL)""",
        # one row per (task, round) this vault worked on: started -> trained -> accepted or
        # rejected; a row left at 'started' is redone, a 'trained' one waits in the outbox
        """CREATE TABLE task_rounds (
            request_id TEXT NOT NULL REFERENCES requests(id),
            round INTEGER NOT NULL,
            consent_id TEXT NOT NULL REFERENCES consents(id),
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            started REAL,
            finished REAL,
            rows INTEGER,
            examples INTEGER,
            epsilon REAL,
            update_hash TEXT,
            receipt_id TEXT,
            error TEXT,
            PRIMARY KEY (request_id, round))""",
        """CREATE TABLE outbox (
            request_id TEXT NOT NULL,
            round INTEGER NOT NULL,
            update_jws TEXT NOT NULL,
            created REAL NOT NULL,
            tries INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            PRIMARY KEY (request_id, round),
            FOREIGN KEY (request_id, round) REFERENCES task_rounds (request_id, round))""",
        """CREATE TABLE receipts (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            jws TEXT NOT NULL,
            organization TEXT NOT NULL,
            person TEXT NOT NULL,
            request_id TEXT NOT NULL,
            round INTEGER NOT NULL,
            amount REAL NOT NULL,
            unit TEXT NOT NULL,
            seq INTEGER NOT NULL,
            prev TEXT,
            received REAL NOT NULL,
            UNIQUE (organization, person, seq))""",
    ],
    # 3: access logs whose newest entries still need a signed checkpoint: set in the
    # transaction that appends them, cleared once the checkpoint line is durable, and signed
    # at the next unlock when a crash came in between. Upgraded logs start unmarked (their
    # checkpoints were written the old way, right after each commit).
    [
        """ALTER TABLE checkpoint_state
            ADD COLUMN needs_checkpoint INTEGER NOT NULL DEFAULT 0""",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema forward to SCHEMA_VERSION; return the version it started at."""
    start = conn.execute("PRAGMA user_version").fetchone()[0]
    if start > SCHEMA_VERSION:
        raise VaultIncompatible(
            f"vault schema version {start} is newer than this Tessera ({SCHEMA_VERSION});"
            " update Tessera"
        )
    for version in range(start + 1, SCHEMA_VERSION + 1):
        with conn:
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return start
