"""Per-dataset access history: an RFC 6962 Merkle log with signed checkpoints.

Every import, export, deletion, task read, consent grant and revocation appends a canonical
JSON entry to its dataset's log inside the caller's transaction, and marks the log as needing
a checkpoint in that same transaction. After the transaction commits, the vault signs a
checkpoint (log id, tree size, root, time) with its DID key, appends it to `checkpoints.jsonl`
(vault/checkpoints.py), outside the database, so that an old `vault.db` copied back is
detected, and then clears the marks. A crash between the commit and the append leaves the
marks set, and the next unlock signs what they point to. Checkpoints name a log by an HMAC of
the dataset name, so the file leaks no dataset names.

`verify` checks each log against every head the file has ever signed for it, not only the
newest: an old database restored and then grown past its newest head in one write gets a
newest head that matches it, and only the older heads show that its first entries changed.
One pass over a log's leaves, with a compact range, gives its root at every signed size.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity.keys import canonical_json, jws_sign, jws_verify
from vault.checkpoints import Chain, CheckpointFile, Head
from vault.db import Connection, DatabaseError
from vault.errors import DatasetNotFound, VerificationFailed
from vault.merkle import (
    Frontier,
    frontier_append,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    root,
    verify_inclusion,
)
from vault.timeparse import iso_utc

ENTRY_FIELDS = ("seq", "time", "actor", "action", "purpose", "consent", "task", "rows", "digest")


@dataclass
class _Walk:
    """One pass over a log: its size and root, and how it compares with its signed heads."""

    size: int
    root: bytes
    damage: list[str]  # entries missing, or changed under their leaf hash
    disagreement: str | None  # the first signed head its prefix differs from
    signed_size: int  # the largest size ever signed for it (0: none)

    def contradictions(self) -> list[str]:
        """Where the log contradicts its signed heads (what `verify` and compaction refuse)."""
        found = [self.disagreement] if self.disagreement else []
        if self.signed_size > self.size:
            found.append(
                f"database is behind the signed checkpoint (log has {self.size} entries, the"
                f" checkpoint {self.signed_size}): an old vault.db was restored or entries were"
                " removed"
            )
        return found


def _walk(rows: Iterable[tuple[int, bytes, bytes]], signed: dict[Head, str]) -> _Walk:
    """Stream a log's (seq, entry, leaf) rows once, comparing its root at every signed size.

    ``signed`` maps each (size, root hex) ever signed for the log to when it was signed. The
    first disagreement is reported in size order: later heads usually differ for the same
    reason.
    """
    checks = sorted(signed.items())  # by size; one size signed twice with two roots: both
    damage: list[str] = []
    disagreement: str | None = None
    frontier: Frontier = []
    size = 0
    k = 0

    def compare() -> None:
        nonlocal k, disagreement
        actual = frontier_root(frontier).hex()
        while k < len(checks) and checks[k][0][0] == size:
            (_, signed_root), signed_at = checks[k]
            k += 1
            if disagreement is None and signed_root != actual:
                disagreement = (
                    f"entries before #{size} differ from what was signed at {signed_at}: the"
                    " database was replaced or edited"
                )

    next_size = checks[0][0][0] if checks else -1
    if next_size == 0:
        compare()
        next_size = checks[k][0][0] if k < len(checks) else -1
    for seq, entry, leaf in rows:
        if seq != size:
            damage.append(f"entry {size} is missing")
        if leaf_hash(entry) != leaf:
            damage.append(f"entry {seq} was changed")
        frontier = frontier_append(frontier, leaf)
        size += 1
        if size == next_size:
            compare()
            next_size = checks[k][0][0] if k < len(checks) else -1
    signed_size = checks[-1][0][0] if checks else 0
    return _Walk(size, frontier_root(frontier), damage, disagreement, signed_size)


@dataclass
class LogReport:
    """What `verify` found for one dataset's log."""

    entries: int
    root: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)


class AccessLog:
    """The vault's access logs; one Merkle tree per dataset."""

    def __init__(self, conn: Connection, folder: Path, jwk: str, did: str, id_key: bytes) -> None:
        self._conn = conn
        self._file = CheckpointFile(folder, jwk, did, check=self._contradictions)
        self._jwk = jwk
        self._did = did
        self._id_key = id_key
        self._pending: set[str] = set()

    def log_id(self, dataset: str) -> str:
        """The name a checkpoint uses for ``dataset``: HMAC-SHA256 under a vault key."""
        return hmac.new(self._id_key, dataset.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    # -- writing -------------------------------------------------------------------------

    def _state(self, dataset: str) -> tuple[int, Frontier]:
        row = self._conn.execute(
            "SELECT size, frontier FROM checkpoint_state WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            return 0, []
        return row[0], [(h, bytes.fromhex(x)) for h, x in json.loads(row[1])]

    def append(
        self,
        dataset: str,
        action: str,
        actor: str,
        purpose: str,
        rows: int = 0,
        digest: str | None = None,
        consent: str | None = None,
        task: str | None = None,
    ) -> dict[str, Any]:
        """Append an entry to ``dataset``'s log; the caller's transaction makes it durable."""
        size, frontier = self._state(dataset)
        entry = {
            "dataset": dataset,
            "seq": size,
            "time": iso_utc(time.time()),
            "actor": actor,
            "action": action,
            "purpose": purpose,
            "consent": consent,
            "task": task,
            "rows": rows,
            "digest": digest,
        }
        encoded = canonical_json(entry)
        leaf = leaf_hash(encoded)
        frontier = frontier_append(frontier, leaf)
        self._conn.execute(
            "INSERT INTO access_log (dataset, seq, entry, leaf) VALUES (?, ?, ?, ?)",
            (dataset, size, encoded, leaf),
        )
        state = json.dumps([(h, x.hex()) for h, x in frontier])
        # needs_checkpoint commits with the entry, so a crash before the checkpoint line is
        # written cannot leave the entry uncovered for good (see publish_unsigned).
        self._conn.execute(
            "INSERT INTO checkpoint_state (dataset, size, frontier, needs_checkpoint)"
            " VALUES (?, ?, ?, 1) ON CONFLICT (dataset) DO UPDATE"
            " SET size = excluded.size, frontier = excluded.frontier, needs_checkpoint = 1",
            (dataset, size + 1, state),
        )
        self._pending.add(dataset)
        return entry

    def publish_checkpoints(self) -> None:
        """Sign one checkpoint covering every log appended to since the last call.

        Call after the transaction commits: a checkpoint must never be ahead of the database.
        Each line names the SHA-256 of the line before it, so the file is a hash chain. When
        another writer holds the database past the busy timeout, the logs stay marked and
        pending: this process's next transaction, or the next unlock, signs them.
        """
        if not self._pending:
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except DatabaseError:
            return
        try:
            heads = {dataset: self._head(dataset) for dataset in sorted(self._pending)}
            self._sign_and_clear(heads)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self._pending.clear()

    def publish_unsigned(self) -> None:
        """At unlock: sign the logs still marked by a crash between a commit and its checkpoint.

        Signing what the database holds is sound: it is encrypted and authenticated under the
        data key, so nobody without the key can have added entries to it. The one thing a
        database copy can do is roll a log back, so a log whose signed head in the file is
        longer than the database's, or that is not a prefix of it, is left marked and unsigned
        for `verify` to report (every head the file signs, not only the newest), and nothing is
        signed on top of a file that fails its own check.
        Anything that goes wrong here leaves the marks for the next unlock: opening the vault
        must not fail over it.
        """
        marked = self._conn.execute(
            "SELECT 1 FROM checkpoint_state WHERE needs_checkpoint = 1 LIMIT 1"
        ).fetchone()
        if marked is None:
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except DatabaseError:
            return
        try:
            chain = self._file.read()
            heads: dict[str, tuple[int, str]] = {}
            covered: dict[str, tuple[int, str]] = {}
            for (dataset,) in self._conn.execute(
                "SELECT dataset FROM checkpoint_state WHERE needs_checkpoint = 1 ORDER BY 1"
            ).fetchall():
                head = self._head(dataset)
                log_id = self.log_id(dataset)
                signed = chain.newest.get(log_id)
                if signed == head:
                    covered[dataset] = head  # the line was written, the crash came before the clear
                elif signed is None or (
                    signed[0] < head[0]
                    and not self._walk(dataset, chain.signed[log_id]).contradictions()
                ):
                    heads[dataset] = head
            if chain.problems:
                heads = {}
            self._clear(covered)
            self._sign_and_clear(heads)
        except (OSError, DatabaseError):
            self._conn.execute("ROLLBACK")
            return
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _head(self, dataset: str) -> tuple[int, str]:
        size, frontier = self._state(dataset)
        return size, frontier_root(frontier).hex()

    def _sign_and_clear(self, heads: dict[str, tuple[int, str]]) -> None:
        """Append one signed checkpoint of ``heads`` (dataset -> head), then clear their marks.

        Runs inside BEGIN IMMEDIATE, which serializes the writers of the checkpoint file. A
        crash after the append and before the commit only leaves marks that the next unlock
        finds already covered.
        """
        if heads:
            self._file.append({self.log_id(d): head for d, head in heads.items()})
            self._clear(heads)

    def _clear(self, heads: dict[str, tuple[int, str]]) -> None:
        for dataset, (size, _) in heads.items():
            # Only the head that was signed: under the write lock nothing moves a log on, but
            # a mark must never be cleared for entries that no checkpoint covers.
            self._conn.execute(
                "UPDATE checkpoint_state SET needs_checkpoint = 0 WHERE dataset = ? AND size = ?",
                (dataset, size),
            )

    def discard_pending(self) -> None:
        """Forget appends of a transaction that rolled back.

        Logs still marked in the database were committed earlier and could not be signed then
        (the lock was busy): they stay pending.
        """
        self._pending = {
            dataset
            for dataset in self._pending
            if self._conn.execute(
                "SELECT needs_checkpoint FROM checkpoint_state WHERE dataset = ?", (dataset,)
            ).fetchone()
            == (1,)
        }

    # -- reading -------------------------------------------------------------------------

    def datasets(self) -> list[str]:
        """Names of all datasets that have a log (deleted datasets keep theirs)."""
        return [r[0] for r in self._conn.execute("SELECT dataset FROM checkpoint_state ORDER BY 1")]

    def entries(self, dataset: str) -> list[dict[str, Any]]:
        """All entries of ``dataset``'s log, oldest first."""
        rows = self._conn.execute(
            "SELECT entry FROM access_log WHERE dataset = ? ORDER BY seq", (dataset,)
        ).fetchall()
        if not rows and dataset not in self.datasets():
            raise DatasetNotFound(f"no access history for dataset {dataset!r}")
        return [{k: json.loads(r[0]).get(k) for k in ENTRY_FIELDS} for r in rows]

    def _walk(self, dataset: str, signed: dict[Head, str]) -> _Walk:
        rows = self._conn.execute(
            "SELECT seq, entry, leaf FROM access_log WHERE dataset = ? ORDER BY seq", (dataset,)
        )
        return _walk(rows, signed)

    def _contradictions(self, chain: Chain) -> list[str]:
        """Where the database contradicts a head ``chain`` signs; compaction checks this.

        A log signed at one head only is skipped: the compacted head keeps that head, so
        `verify` still sees any contradiction, and the check costs a pass over its leaves.
        """
        found: list[str] = []
        for dataset in self.datasets():
            signed = chain.signed.get(self.log_id(dataset), {})
            if len(signed) > 1:
                found.extend(
                    f"{dataset}: {p}" for p in self._walk(dataset, signed).contradictions()
                )
        return found

    def _leaves(self, dataset: str) -> list[bytes]:
        return [
            r[0]
            for r in self._conn.execute(
                "SELECT leaf FROM access_log WHERE dataset = ? ORDER BY seq", (dataset,)
            )
        ]

    def proof(self, dataset: str, seq: int) -> dict[str, Any]:
        """An inclusion proof for entry ``seq``, with a signed statement of the current root."""
        leaves = self._leaves(dataset)
        if not 0 <= seq < len(leaves):
            raise DatasetNotFound(f"{dataset!r} has no log entry {seq} (size {len(leaves)})")
        entry = self._conn.execute(
            "SELECT entry FROM access_log WHERE dataset = ? AND seq = ?", (dataset, seq)
        ).fetchone()[0]
        tree_root = root(leaves)
        statement = {
            "dataset": dataset,
            "size": len(leaves),
            "root": tree_root.hex(),
            "time": iso_utc(time.time()),
            "vault": self._did,
        }
        return {
            "format": "tessera-inclusion-proof/1",
            "entry": json.loads(entry),
            "seq": seq,
            "size": len(leaves),
            "path": [p.hex() for p in inclusion_proof(seq, leaves)],
            "root": tree_root.hex(),
            "statement": jws_sign(self._jwk, statement),
        }

    # -- verification --------------------------------------------------------------------

    def verify(self) -> tuple[dict[str, LogReport], list[str]]:
        """Recompute every log's root and check it against every head ever signed for it."""
        chain = self._file.read()
        problems = list(chain.problems)
        signed = dict(chain.signed)
        reports: dict[str, LogReport] = {}
        for dataset in self.datasets():
            report = self._verify_one(dataset, signed.pop(self.log_id(dataset), {}))
            reports[dataset] = report
            problems.extend(f"{dataset}: {p}" for p in report.problems)
        if signed:
            problems.append(
                f"{len(signed)} signed log(s) are missing from the database (an old vault.db?)"
            )
        return reports, problems

    def _verify_one(self, dataset: str, signed: dict[Head, str]) -> LogReport:
        walk = self._walk(dataset, signed)
        problems = list(walk.damage)
        size, stored = self._state(dataset)
        if size != walk.size or frontier_root(stored) != walk.root:
            problems.append("log head does not match its recorded state")
        if not signed:
            problems.append("no signed checkpoint covers this log")
        problems.extend(walk.contradictions())
        if signed and walk.signed_size < walk.size:
            problems.append(
                f"{walk.size - walk.signed_size} newest entries are not covered by a signed"
                " checkpoint"
            )
        return LogReport(walk.size, walk.root.hex(), not problems, problems)


def check_proof(proof: dict[str, Any]) -> dict[str, Any]:
    """Verify an inclusion proof file on its own; return what it proves or raise."""
    try:
        did, statement = jws_verify(proof["statement"])
        entry = canonical_json(proof["entry"])
        path = [bytes.fromhex(p) for p in proof["path"]]
        seq, size, tree_root = int(proof["seq"]), int(proof["size"]), bytes.fromhex(proof["root"])
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationFailed(f"malformed inclusion proof ({exc})") from None
    if statement.get("vault") != did:
        raise VerificationFailed("statement names a different vault than its signer")
    if (statement.get("size"), statement.get("root")) != (size, tree_root.hex()):
        raise VerificationFailed("proof does not match the signed statement")
    if statement.get("dataset") != proof["entry"].get("dataset"):
        raise VerificationFailed("entry belongs to another dataset than the statement")
    if not verify_inclusion(seq, size, leaf_hash(entry), path, tree_root):
        raise VerificationFailed("inclusion proof does not verify")
    return {"ok": True, "vault": did, "dataset": statement["dataset"], "seq": seq, "size": size}
