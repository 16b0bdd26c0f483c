"""The exchange's storage: plain DB-API over SQLite (default) or PostgreSQL (by URL).

One code path for both: SQL is written once with ``?`` placeholders (rewritten to ``%s`` for
psycopg) and only two things differ by dialect — the blob column type and the row lock
(``FOR UPDATE`` on PostgreSQL; SQLite write transactions are ``BEGIN IMMEDIATE`` and so already
serialized). Updates are stored as raw float32 coordinate chunks of :data:`CHUNK` values, one
row per (update, chunk), so aggregation can stream the same chunk of every update without
ever holding whole updates in memory. Organization reward keys are AES-GCM wrapped under the
exchange's secret.

URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or a plain path;
``postgresql://user@host/db`` (also ``postgres://`` and ``postgresql+psycopg://``).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agents.exchange import rewards
from vault.errors import TesseraError

CHUNK = 16_384  # float32 values per stored chunk: 64 KiB rows
NONCE_TTL = 900  # seconds a nonce is remembered; comfortably over the 300 s skew window
AGGREGATION_TIMEOUT = 600  # a claim on a round older than this belongs to a dead worker

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


class Refused(TesseraError):
    """The exchange refuses an operation; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


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


class KeyBox:
    """AES-GCM wrapping of organization keys under the exchange's 32-byte secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("the exchange secret must be 32 bytes")
        self._aead = AESGCM(secret)

    def wrap(self, did: str, jwk: str) -> bytes:
        """Encrypt ``jwk``, bound to ``did`` as associated data."""
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, jwk.encode(), did.encode())

    def unwrap(self, did: str, blob: bytes) -> str:
        """Decrypt a wrapped key; Refused (503) if it was wrapped under another secret."""
        try:
            return self._aead.decrypt(blob[:12], bytes(blob[12:]), did.encode()).decode()
        except (InvalidTag, ValueError):
            raise Refused(
                "the exchange cannot unwrap this organization's key; post again", 503
            ) from None


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The exchange secret from a 0600 file, created with 32 random bytes if missing."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    data = target.read_bytes()
    if len(data) != 32:
        raise TesseraError(f"{target}: the exchange secret must be exactly 32 bytes")
    return data


class Store:
    """Organizations, nonces, packages, requests, consents: the simple parts of the state."""

    def __init__(self, url: str, secret: bytes | None = None) -> None:
        self.db = Database(url)
        # without a persistent secret, wrapped keys only live as long as this process
        self.keys = KeyBox(secret or secrets.token_bytes(32))

    def close(self) -> None:
        """Release the database connections."""
        self.db.close()

    def admit(self, did: str, name: str) -> None:
        """Admit (or rename) an organization so it may post requests."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO organizations (did, name, admitted) VALUES (?, ?, ?) "
                "ON CONFLICT (did) DO UPDATE SET name = excluded.name",
                (did, name, time.time()),
            )

    def organization(self, did: str) -> str | None:
        """The admitted organization's name, or None."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT name FROM organizations WHERE did = ?", (did,))
        return row[0] if row else None

    def set_org_key(self, did: str, jwk: str) -> None:
        """Keep the organization's signing key (wrapped) for reward receipts."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE organizations SET wrapped_key = ? WHERE did = ?",
                (self.keys.wrap(did, jwk), did),
            )

    def org_key(self, tx: Tx, did: str) -> str | None:
        """The organization's signing key, unwrapped, or None if it never sent one."""
        row = tx.one("SELECT wrapped_key FROM organizations WHERE did = ?", (did,))
        return self.keys.unwrap(did, bytes(row[0])) if row and row[0] is not None else None

    def remember_nonce(self, did: str, nonce: str, now: float) -> bool:
        """Record a nonce; False if this signer used it before (a replay)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM nonces WHERE seen < ?", (now - NONCE_TTL,))
            cursor = tx.execute(
                "INSERT INTO nonces (did, nonce, seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (did, nonce, now),
            )
            return cursor.rowcount == 1

    def package(self, address: str) -> bytes | None:
        """A stored package's bytes, or None."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT data FROM packages WHERE address = ?", (address,))
        return bytes(row[0]) if row else None

    def add_request(
        self,
        payload: dict[str, Any],
        jws: str,
        package: bytes,
        spec: list[dict[str, Any]],
        initial: bytes,
        expires: float,
        now: float,
    ) -> None:
        """Store a verified request, its package and its round-0 parameters."""
        with self.db.transaction() as tx:
            if tx.one("SELECT 1 FROM requests WHERE id = ?", (payload["id"],)):
                raise Refused(f"request {payload['id']} was already posted", 409)
            tx.execute(
                "INSERT INTO packages (address, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (payload["package"], package),
            )
            tx.execute(
                "INSERT INTO requests (id, issuer, jws, payload, package, spec, expires, round,"
                " round_opened, closed, posted) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?)",
                (
                    payload["id"],
                    payload["issuer"],
                    jws,
                    json.dumps(payload),
                    payload["package"],
                    json.dumps(spec),
                    expires,
                    now,
                    now,
                ),
            )
            tx.execute(
                "INSERT INTO params (request_id, round, data) VALUES (?, 0, ?)",
                (payload["id"], initial),
            )

    def request(self, tx: Tx, request_id: str, lock: bool = False) -> dict[str, Any]:
        """One request's row as a dict (``lock`` holds it until the transaction ends)."""
        row = tx.one(
            "SELECT id, issuer, jws, payload, package, spec, expires, round, round_opened,"
            " closed, aggregating FROM requests WHERE id = ?" + (tx.for_update if lock else ""),
            (request_id,),
        )
        if row is None:
            raise Refused(f"no request {request_id}", 404)
        keys = ("id", "issuer", "jws", "payload", "package", "spec", "expires", "round")
        out = dict(zip(keys, row[:8], strict=True))
        out["payload"] = json.loads(out["payload"])
        out["spec"] = json.loads(out["spec"])
        out.update(round_opened=row[8], closed=bool(row[9]), aggregating=row[10])
        return out

    def open_requests(self, now: float) -> list[dict[str, str]]:
        """Requests still taking part: not closed, not expired, oldest first."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT jws, package FROM requests WHERE closed = 0 AND expires > ?"
                " ORDER BY posted, id",
                (now,),
            )
        return [{"request": jws, "package": package} for jws, package in rows]

    def params(self, request_id: str, round_index: int) -> bytes:
        """The raw float32 global parameters at the start of ``round_index``."""
        with self.db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT data FROM params WHERE request_id = ? AND round = ?",
                (request_id, round_index),
            )
        if row is None:
            raise Refused(f"no parameters for round {round_index}", 404)
        return bytes(row[0])

    def add_consent(self, payload: dict[str, Any], jws: str, expires: float) -> None:
        """Record a consent receipt; re-posting the identical receipt is a no-op."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT jws FROM consents WHERE id = ?", (payload["id"],))
            if row is not None:
                if row[0] != jws:
                    raise Refused(f"consent {payload['id']} was already recorded differently")
                return
            tx.execute(
                "INSERT INTO consents (id, request_id, subject, jws, expires, revoked)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (payload["id"], payload["request"], payload["subject"], jws, expires),
            )

    def revoke(self, consent_id: str, subject: str, jws: str) -> None:
        """Mark a consent revoked; later updates under it are refused."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT subject FROM consents WHERE id = ?", (consent_id,))
            if row is None:
                raise Refused(f"no consent {consent_id}", 404)
            if row[0] != subject:
                raise Refused("only the consent's subject can revoke it", 403)
            tx.execute(
                "UPDATE consents SET revoked = 1, revocation = COALESCE(revocation, ?)"
                " WHERE id = ?",
                (jws, consent_id),
            )

    def consent_problem(
        self, request_id: str, subject: str, consent_id: str, now: float
    ) -> str | None:
        """Why ``consent_id`` does not let ``subject`` send updates for the request, or None."""
        with self.db.transaction(write=False) as tx:
            return _consent_problem(tx, request_id, subject, consent_id, now)

    def has_consent(self, tx: Tx, request_id: str, subject: str, now: float) -> bool:
        """Whether ``subject`` holds an active consent for the request."""
        return (
            tx.one(
                "SELECT 1 FROM consents WHERE request_id = ? AND subject = ? AND revoked = 0"
                " AND expires > ?",
                (request_id, subject, now),
            )
            is not None
        )

    def receipts_for(self, person: str) -> list[str]:
        """Every reward receipt of a person, by organization then seq."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT jws FROM receipts WHERE person = ? ORDER BY organization, seq", (person,)
            )
        return [row[0] for row in rows]

    # ------------------------------------------------------------------------ rounds

    def record_rejection(
        self, request_id: str, round_index: int, vault: str, reason: str, jws_hash: str, now: float
    ) -> None:
        """Keep a refused update's reason for the organization's status view."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO updates (id, request_id, round, vault, accepted, reason, jws_hash,"
                " received) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (
                    secrets.token_hex(16),
                    request_id,
                    round_index,
                    vault,
                    reason[:500],
                    jws_hash,
                    now,
                ),
            )

    def accept_update(self, update: dict[str, Any], flat: np.ndarray, now: float) -> dict[str, Any]:
        """Store a checked update and issue its reward receipt, in one transaction.

        ``update`` holds request, vault, round, consent, jws_hash, examples, norm, epsilon.
        Refused if the round is not open, the consent does not hold, or the vault already sent
        a different update this round; the byte-identical update returns its first answer.
        """
        request_id, vault = update["request"], update["vault"]
        with self.db.transaction() as tx:
            request = self.request(tx, request_id, lock=True)
            first = tx.one(
                "SELECT round, receipt FROM updates WHERE request_id = ? AND vault = ?"
                " AND jws_hash = ? AND accepted = 1",
                (request_id, vault, update["jws_hash"]),
            )
            if first is not None:  # a retry of an update already taken: same answer, once
                return {"accepted": True, "receipt": first[1], "round": first[0]}
            _check_round_open(request, update["round"], now)
            problem = _consent_problem(tx, request_id, vault, update["consent"], now)
            if problem:
                raise Refused(problem, 403)
            if tx.one(
                "SELECT 1 FROM updates WHERE request_id = ? AND round = ? AND vault = ?"
                " AND accepted = 1",
                (request_id, update["round"], vault),
            ):
                raise Refused(
                    f"duplicate: this vault already sent an update for round {update['round']}"
                )
            update_id = secrets.token_hex(16)
            tx.execute(
                "INSERT INTO updates (id, request_id, round, vault, accepted, examples, norm,"
                " epsilon, jws_hash, received) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (
                    update_id,
                    request_id,
                    update["round"],
                    vault,
                    update["examples"],
                    update["norm"],
                    update["epsilon"],
                    update["jws_hash"],
                    now,
                ),
            )
            raw = flat.astype("<f4", copy=False)
            tx.many(
                "INSERT INTO chunks (request_id, round, chunk, update_id, data)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (request_id, update["round"], i, update_id, raw[s : s + CHUNK].tobytes())
                    for i, s in enumerate(range(0, raw.size, CHUNK))
                ],
            )
            receipt = rewards.issue_receipt(tx, self.org_key, request, vault, update["round"])
            tx.execute("UPDATE updates SET receipt = ? WHERE id = ?", (receipt, update_id))
        return {"accepted": True, "receipt": receipt, "round": update["round"]}

    def begin_aggregation(self, request_id: str, now: float) -> dict[str, Any] | None:
        """Claim the open round for aggregation if it is due; None if there is nothing to do.

        While claimed, updates for the round are answered 503 (retry later) so none slips in
        unaggregated; a claim older than :data:`AGGREGATION_TIMEOUT` (a crashed worker) is
        taken over.
        """
        with self.db.transaction() as tx:
            request = self.request(tx, request_id, lock=True)
            if request["closed"]:
                return None
            if request["aggregating"] and now - request["aggregating"] < AGGREGATION_TIMEOUT:
                return None
            if request["expires"] <= now:
                tx.execute("UPDATE requests SET closed = 1 WHERE id = ?", (request_id,))
                return None
            rows = tx.all(
                "SELECT id, examples, norm FROM updates WHERE request_id = ? AND round = ?"
                " AND accepted = 1 ORDER BY id",
                (request_id, request["round"]),
            )
            terms = request["payload"]["aggregation"]
            timed_out = now >= request["round_opened"] + terms["round_seconds"]
            if timed_out and not rows:
                # nothing to aggregate: give the round a fresh deadline instead
                tx.execute("UPDATE requests SET round_opened = ? WHERE id = ?", (now, request_id))
                return None
            if len(rows) < terms["min_updates"] and not timed_out:
                return None
            tx.execute("UPDATE requests SET aggregating = ? WHERE id = ?", (now, request_id))
        return {
            "request": request,
            "round": request["round"],
            "ids": [row[0] for row in rows],
            "examples": np.array([row[1] for row in rows], dtype=np.float64),
            "norms": np.array([row[2] for row in rows], dtype=np.float64),
        }

    def round_chunks(
        self, request_id: str, round_index: int, ids: list[str], size: int, readers: int = 2
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Stream ``(offset, rows)`` coordinate chunks of the given updates, in ``ids`` order.

        ``readers`` threads read ahead, each on its own connection (PostgreSQL serves them in
        parallel). A claimed round's chunks no longer change, so no shared snapshot is needed.
        """
        index = {update_id: i for i, update_id in enumerate(ids)}

        def read(number: int, offset: int) -> tuple[int, np.ndarray]:
            rows = np.empty((len(ids), min(CHUNK, size - offset)), dtype=np.float32)
            seen = 0
            with self.db.transaction(write=False) as tx:
                for update_id, data in tx.execute(
                    "SELECT update_id, data FROM chunks WHERE request_id = ? AND round = ?"
                    " AND chunk = ?",
                    (request_id, round_index, number),
                ):
                    if update_id in index:
                        rows[index[update_id]] = np.frombuffer(data, dtype="<f4")
                        seen += 1
            if seen != len(ids):
                raise TesseraError(f"chunk {number} of round {round_index} is incomplete")
            return offset, rows

        with ThreadPoolExecutor(max_workers=readers) as pool:
            pending: deque[Future[tuple[int, np.ndarray]]] = deque()
            for number, offset in enumerate(range(0, size, CHUNK)):
                pending.append(pool.submit(read, number, offset))
                if len(pending) > readers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def finish_aggregation(
        self, request_id: str, round_index: int, params: bytes, now: float, seconds: float
    ) -> None:
        """Publish the next round's parameters and advance (or close) the request.

        ``seconds`` is how long the aggregation took, kept for the status view.
        """
        with self.db.transaction() as tx:
            request = self.request(tx, request_id, lock=True)
            if request["round"] != round_index:
                raise TesseraError("the round moved on during aggregation")
            nxt = round_index + 1
            updates = tx.one(
                "SELECT COUNT(*) FROM updates WHERE request_id = ? AND round = ? AND accepted = 1",
                (request_id, round_index),
            )[0]
            tx.execute(
                "INSERT INTO params (request_id, round, data, aggregated_updates,"
                " aggregation_seconds) VALUES (?, ?, ?, ?, ?)",
                (request_id, nxt, params, updates, seconds),
            )
            closed = 1 if nxt >= request["payload"]["rounds"] else 0
            tx.execute(
                "UPDATE requests SET round = ?, round_opened = ?, closed = ?, aggregating = NULL"
                " WHERE id = ?",
                (nxt, now, closed, request_id),
            )

    def drop_chunks(self, request_id: str, round_index: int, size: int) -> None:
        """Delete an aggregated round's update chunks (the bulk of the storage).

        One short transaction per chunk index, so submissions to other rounds and requests
        are never held up for the whole cleanup.
        """
        for number in range((size + CHUNK - 1) // CHUNK):
            with self.db.transaction() as tx:
                tx.execute(
                    "DELETE FROM chunks WHERE request_id = ? AND round = ? AND chunk = ?",
                    (request_id, round_index, number),
                )

    def abort_aggregation(self, request_id: str) -> None:
        """Release a claim after a failed aggregation, so the next check retries it."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE requests SET aggregating = NULL WHERE id = ?", (request_id,))

    def round_status(self, request_id: str) -> list[dict[str, Any]]:
        """Per-round counts, rejection reasons and participants, for the organization."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT round, vault, accepted, reason FROM updates WHERE request_id = ?"
                " ORDER BY round, received",
                (request_id,),
            )
            timings = tx.all(
                "SELECT round - 1, aggregation_seconds FROM params WHERE request_id = ?"
                " AND round > 0",
                (request_id,),
            )
        rounds: dict[int, dict[str, Any]] = {}
        for round_index, vault, accepted, reason in rows:
            entry = rounds.setdefault(
                round_index,
                {
                    "round": round_index,
                    "accepted": 0,
                    "rejected": 0,
                    "participants": [],
                    "rejections": [],
                    "aggregation_seconds": None,
                },
            )
            if accepted:
                entry["accepted"] += 1
                entry["participants"].append(vault)
            else:
                entry["rejected"] += 1
                entry["rejections"].append({"vault": vault, "reason": reason})
        for round_index, seconds in timings:
            if round_index in rounds:
                rounds[round_index]["aggregation_seconds"] = seconds
        return [rounds[k] for k in sorted(rounds)]


def _consent_problem(
    tx: Tx, request_id: str, subject: str, consent_id: str, now: float
) -> str | None:
    consent = tx.one(
        "SELECT request_id, subject, revoked, expires FROM consents WHERE id = ?", (consent_id,)
    )
    if consent is None or consent[0] != request_id or consent[1] != subject:
        return "no consent from this vault for this request is recorded"
    if consent[2]:
        return "the consent was revoked"
    if consent[3] <= now:
        return "the consent has expired"
    return None


def _check_round_open(request: dict[str, Any], round_index: int, now: float) -> None:
    if request["closed"] or request["expires"] <= now:
        raise Refused("the request is closed")
    if round_index != request["round"]:
        raise Refused(f"round {round_index} is not open (the open round is {request['round']})")
    if request["aggregating"]:
        raise Refused(f"round {round_index} is being aggregated; try again shortly", 503)
