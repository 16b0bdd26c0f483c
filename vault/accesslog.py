"""Per-dataset access history: an RFC 6962 Merkle log with signed checkpoints.

Every import, export, deletion, task read, consent grant and revocation appends a canonical
JSON entry to its dataset's log inside the caller's transaction. After the transaction commits,
the vault signs a checkpoint (log id, tree size, root, time) with its DID key and appends it to
`checkpoints.jsonl`, outside the database, so that an old `vault.db` copied back is detected.
Checkpoints name a log by an HMAC of the dataset name, so the file leaks no dataset names.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity.keys import b64url_decode, canonical_json, jws_sign, jws_verify
from vault.db import Connection
from vault.errors import DatasetNotFound, VerificationFailed
from vault.fsutil import append_line
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

CHECKPOINTS = "checkpoints.jsonl"
ENTRY_FIELDS = ("seq", "time", "actor", "action", "purpose", "consent", "task", "rows", "digest")


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
        self._path = folder / CHECKPOINTS
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
        self._conn.execute(
            "INSERT INTO checkpoint_state (dataset, size, frontier) VALUES (?, ?, ?)"
            " ON CONFLICT (dataset) DO UPDATE"
            " SET size = excluded.size, frontier = excluded.frontier",
            (dataset, size + 1, state),
        )
        self._pending.add(dataset)
        return entry

    def publish_checkpoints(self) -> None:
        """Sign one checkpoint covering every log appended to since the last call.

        Call after the transaction commits: a checkpoint must never be ahead of the database.
        Each line names the SHA-256 of the line before it, so the file is a hash chain and the
        signature of its last line vouches for all of it.
        """
        if not self._pending:
            return
        logs = {}
        for dataset in sorted(self._pending):
            size, frontier = self._state(dataset)
            logs[self.log_id(dataset)] = {"size": size, "root": frontier_root(frontier).hex()}
        last = _last_line(self._path)
        payload = {
            "prev": hashlib.sha256(last).hexdigest() if last else None,
            "logs": logs,
            "time": iso_utc(time.time()),
            "vault": self._did,
        }
        append_line(self._path, json.dumps({"checkpoint": jws_sign(self._jwk, payload)}))
        self._pending.clear()

    def discard_pending(self) -> None:
        """Forget appends of a transaction that rolled back."""
        self._pending.clear()

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

    def _newest_checkpoints(self, problems: list[str]) -> dict[str, tuple[int, str]]:
        """The newest signed (size, root) of every log, after checking the file's hash chain."""
        newest: dict[str, tuple[int, str]] = {}
        if not self._path.exists():
            return newest
        previous: bytes | None = None
        token = None
        with open(self._path, "rb") as f:
            for number, raw in enumerate(f, 1):
                line = raw.rstrip(b"\n")
                try:
                    token = json.loads(line)["checkpoint"]
                    payload = json.loads(b64url_decode(token.split(".")[1]))
                    expected = hashlib.sha256(previous).hexdigest() if previous else None
                    if payload["prev"] != expected:
                        problems.append(f"{CHECKPOINTS} line {number}: hash chain broken")
                    for log_id, head in payload["logs"].items():
                        newest[log_id] = (int(head["size"]), str(head["root"]))
                except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                    problems.append(f"{CHECKPOINTS} line {number}: unreadable checkpoint ({exc})")
                previous = line
        if token is not None:
            try:
                jws_verify(token, self._did)
            except VerificationFailed as exc:
                problems.append(f"{CHECKPOINTS}: bad checkpoint signature ({exc})")
        return newest

    def verify(self) -> tuple[dict[str, LogReport], list[str]]:
        """Recompute every log's root and check it against its newest signed checkpoint."""
        problems: list[str] = []
        newest = self._newest_checkpoints(problems)
        reports: dict[str, LogReport] = {}
        for dataset in self.datasets():
            report = self._verify_one(dataset, newest.pop(self.log_id(dataset), None))
            reports[dataset] = report
            problems.extend(f"{dataset}: {p}" for p in report.problems)
        if newest:
            problems.append(
                f"{len(newest)} signed log(s) are missing from the database (an old vault.db?)"
            )
        return reports, problems

    def _verify_one(self, dataset: str, checkpoint: tuple[int, str] | None) -> LogReport:
        problems: list[str] = []
        leaves: list[bytes] = []
        rows = self._conn.execute(
            "SELECT seq, entry, leaf FROM access_log WHERE dataset = ? ORDER BY seq", (dataset,)
        )
        for seq, entry, leaf in rows:
            if seq != len(leaves):
                problems.append(f"entry {len(leaves)} is missing")
            if leaf_hash(entry) != leaf:
                problems.append(f"entry {seq} was changed")
            leaves.append(leaf)
        tree_root = root(leaves)
        size, stored = self._state(dataset)
        if size != len(leaves) or frontier_root(stored) != tree_root:
            problems.append("log head does not match its recorded state")
        if checkpoint is None:
            problems.append("no signed checkpoint covers this log")
        else:
            signed_size, signed_root = checkpoint
            if signed_size > len(leaves):
                problems.append(
                    f"database is behind the signed checkpoint (log has {len(leaves)} entries,"
                    f" the checkpoint {signed_size}): an old vault.db was restored or entries"
                    " were removed"
                )
            elif root(leaves[:signed_size]).hex() != signed_root:
                problems.append(f"log differs from the signed checkpoint at size {signed_size}")
            elif signed_size < len(leaves):
                problems.append(
                    f"{len(leaves) - signed_size} newest entries are not covered by a signed"
                    " checkpoint"
                )
        return LogReport(len(leaves), tree_root.hex(), not problems, problems)


def _last_line(path: Path) -> bytes | None:
    """The last line of ``path`` without its newline, or None for a missing or empty file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            block = b""
            position = end
            while position > 0 and block.count(b"\n") < 2:
                step = min(4096, position)
                position -= step
                f.seek(position)
                block = f.read(step) + block
    except FileNotFoundError:
        return None
    lines = block.rstrip(b"\n").split(b"\n")
    return lines[-1] if lines and lines[-1] else None


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
