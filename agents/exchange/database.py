"""The exchange's database layer: plain DB-API over SQLite (default) or PostgreSQL (by URL).

One code path for both: SQL is written once with ``?`` placeholders (rewritten to ``%s`` for
psycopg) and only two things differ by dialect — the blob column type and the row lock
(``FOR UPDATE`` on PostgreSQL; SQLite write transactions are ``BEGIN IMMEDIATE`` and so already
serialized). Updates are stored as raw float32 coordinate chunks of :data:`CHUNK` values, one
row per (update, chunk), so aggregation can stream the same chunk of every update without
ever holding whole updates in memory.

URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or a plain path;
``postgresql://user@host/db`` (also ``postgres://`` and ``postgresql+psycopg://``).
"""

from __future__ import annotations

import os
import queue
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHUNK = 16_384  # float32 values per stored chunk: 64 KiB rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS organizations (did TEXT PRIMARY KEY, name TEXT NOT NULL,
  admitted DOUBLE PRECISION NOT NULL, wrapped_key {blob});
CREATE TABLE IF NOT EXISTS nonces (did TEXT NOT NULL, nonce TEXT NOT NULL,
  seen DOUBLE PRECISION NOT NULL, PRIMARY KEY (did, nonce));
CREATE INDEX IF NOT EXISTS nonces_by_time ON nonces (seen);
CREATE TABLE IF NOT EXISTS packages (address TEXT PRIMARY KEY, data {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, issuer TEXT NOT NULL,
  jws TEXT NOT NULL, payload TEXT NOT NULL, package TEXT NOT NULL, spec TEXT NOT NULL,
  expires DOUBLE PRECISION NOT NULL, round INTEGER NOT NULL,
  round_opened DOUBLE PRECISION NOT NULL, closed INTEGER NOT NULL,
  aggregating DOUBLE PRECISION, posted DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS params (request_id TEXT NOT NULL, round INTEGER NOT NULL,
  data {blob} NOT NULL, aggregated_updates INTEGER, aggregation_seconds DOUBLE PRECISION,
  PRIMARY KEY (request_id, round));
CREATE TABLE IF NOT EXISTS consents (id TEXT PRIMARY KEY, request_id TEXT NOT NULL,
  subject TEXT NOT NULL, jws TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,
  revoked INTEGER NOT NULL, revocation TEXT);
CREATE TABLE IF NOT EXISTS updates (id TEXT PRIMARY KEY, request_id TEXT NOT NULL,
  round INTEGER NOT NULL, vault TEXT NOT NULL, accepted INTEGER NOT NULL, reason TEXT,
  examples DOUBLE PRECISION, norm DOUBLE PRECISION, epsilon DOUBLE PRECISION,
  jws_hash TEXT NOT NULL, received DOUBLE PRECISION NOT NULL, receipt TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS one_update_per_round ON updates (request_id, round, vault)
  WHERE accepted = 1;
CREATE INDEX IF NOT EXISTS updates_by_round ON updates (request_id, round);
CREATE TABLE IF NOT EXISTS chunks (request_id TEXT NOT NULL, round INTEGER NOT NULL,
  chunk INTEGER NOT NULL, update_id TEXT NOT NULL, data {blob} NOT NULL,
  PRIMARY KEY (request_id, round, chunk, update_id));
CREATE TABLE IF NOT EXISTS chains (organization TEXT NOT NULL, person TEXT NOT NULL,
  PRIMARY KEY (organization, person));
CREATE TABLE IF NOT EXISTS receipts (id TEXT PRIMARY KEY, organization TEXT NOT NULL,
  person TEXT NOT NULL, seq INTEGER NOT NULL, request_id TEXT NOT NULL,
  amount DOUBLE PRECISION NOT NULL, jws TEXT NOT NULL, hash TEXT NOT NULL,
  UNIQUE (organization, person, seq));
CREATE INDEX IF NOT EXISTS receipts_by_request ON receipts (request_id, person);
"""

# PostgreSQL would otherwise try to compress every 64 KiB chunk of random floats
_PG_EXTRA = "ALTER TABLE chunks ALTER COLUMN data SET STORAGE EXTERNAL;"


class Tx:
    """One open transaction: run SQL written with ``?`` placeholders."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.for_update = " FOR UPDATE" if dialect == "postgresql" else ""

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return the cursor."""
        cursor = self.conn.cursor()
        if self.dialect == "postgresql":
            # binary results: bytea would otherwise travel hex-encoded, twice its size, and
            # be decoded in Python (aggregation reads gigabytes of it)
            cursor.execute(self._sql(sql), tuple(params), binary=True)
        else:
            cursor.execute(self._sql(sql), tuple(params))
        return cursor

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows."""
        self.conn.cursor().executemany(self._sql(sql), [tuple(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        return list(self.execute(sql, params).fetchall())


def parse_url(url: str) -> tuple[str, str]:
    """(dialect, target): target is a file path for SQLite, a libpq URL for PostgreSQL."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql", "postgresql://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite", url[len("sqlite:///") :]
    if "://" in url:
        raise ValueError(f"unsupported database URL {url.split('://')[0]}://...")
    return "sqlite", url


class Database:
    """A small connection pool with transactions; the same API for SQLite and PostgreSQL."""

    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.dialect, self.target = parse_url(url)
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=pool_size)
        if self.dialect == "sqlite" and self.target != ":memory:":
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as tx:
            blob = "BYTEA" if self.dialect == "postgresql" else "BLOB"
            for statement in _SCHEMA.format(blob=blob).split(";"):
                if statement.strip():
                    tx.execute(statement)
            if self.dialect == "postgresql":
                tx.execute(_PG_EXTRA)
        if self.dialect == "sqlite":
            os.chmod(self.target, 0o600)

    def _connect(self) -> Any:
        if self.dialect == "postgresql":
            import psycopg  # only needed for PostgreSQL URLs

            return psycopg.connect(self.target, autocommit=False)
        # autocommit mode: transactions are opened explicitly below
        conn = sqlite3.connect(
            self.target, timeout=60, isolation_level=None, check_same_thread=False
        )
        # 64 KiB pages (effective only when the file is created) and memory-mapped reads:
        # update chunks are 64 KiB blobs, and aggregation reads gigabytes of them
        conn.execute("PRAGMA page_size=65536")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA mmap_size={8 * 1024**3}")
        # Debian builds default to secure_delete=ON, which rewrites every freed page with
        # zeros: gigabytes per round when aggregated updates are dropped. FAST zeroes what
        # costs no extra I/O; the freed pages are reused by the next round's updates.
        conn.execute("PRAGMA secure_delete=FAST")
        return conn

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        """A transaction on a pooled connection: committed on success, rolled back on error."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        healthy = False
        try:
            if self.dialect == "sqlite":
                # IMMEDIATE takes the write lock up front, so two writers never deadlock
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield Tx(conn, self.dialect)
            conn.commit()
            healthy = True
        finally:
            if not healthy:
                try:
                    conn.rollback()
                    healthy = True
                except Exception:  # noqa: BLE001 - a broken connection is dropped below
                    healthy = False
            self._release(conn, healthy)

    def _release(self, conn: Any, healthy: bool) -> None:
        if healthy:
            try:
                self._idle.put_nowait(conn)
                return
            except queue.Full:
                pass
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
