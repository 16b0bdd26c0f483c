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

from identity.keys import canonical_json, jws_sign, jws_verify
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
        """Sign and append a checkpoint for every log appended to since the last call.

        Call after the transaction commits: a checkpoint must never be ahead of the database.
        """
        for dataset in sorted(self._pending):
            size, frontier = self._state(dataset)
            payload = {
                "log": self.log_id(dataset),
                "size": size,
                "root": frontier_root(frontier).hex(),
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

    def _checkpoints(self, problems: list[str]) -> dict[str, list[tuple[int, str]]]:
        """Checkpoints by log id, after checking every signature."""
        found: dict[str, list[tuple[int, str]]] = {}
        if not self._path.exists():
            return found
        with open(self._path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    _, payload = jws_verify(json.loads(line)["checkpoint"], self._did)
                    found.setdefault(payload["log"], []).append((payload["size"], payload["root"]))
                except (VerificationFailed, ValueError, KeyError, TypeError) as exc:
                    problems.append(f"{CHECKPOINTS} line {number}: bad checkpoint ({exc})")
        return found

    def verify(self) -> tuple[dict[str, LogReport], list[str]]:
        """Recompute every log's root and check it against every signed checkpoint."""
        problems: list[str] = []
        checkpoints = self._checkpoints(problems)
        reports: dict[str, LogReport] = {}
        for dataset in self.datasets():
            report = self._verify_one(dataset, checkpoints.pop(self.log_id(dataset), []))
            reports[dataset] = report
            problems.extend(f"{dataset}: {p}" for p in report.problems)
        for _ in checkpoints:
            problems.append("a signed checkpoint names a log that is missing from the database")
        return reports, problems

    def _verify_one(self, dataset: str, checkpoints: list[tuple[int, str]]) -> LogReport:
        problems: list[str] = []
        wanted = {}
        for size, cp_root in checkpoints:
            wanted.setdefault(size, set()).add(cp_root)
        frontier: Frontier = []
        expected_seq = 0
        rows = self._conn.execute(
            "SELECT seq, entry, leaf FROM access_log WHERE dataset = ? ORDER BY seq", (dataset,)
        )
        for seq, entry, leaf in rows:
            if seq != expected_seq:
                problems.append(f"entry {expected_seq} is missing")
                expected_seq = seq
            if leaf_hash(entry) != leaf:
                problems.append(f"entry {seq} was changed")
            frontier = frontier_append(frontier, leaf)
            expected_seq += 1
            roots = wanted.pop(expected_seq, None)
            if roots and roots != {frontier_root(frontier).hex()}:
                problems.append(f"log differs from the signed checkpoint at size {expected_seq}")
        size, stored = self._state(dataset)
        if size != expected_seq or frontier_root(stored) != frontier_root(frontier):
            problems.append("log head does not match its recorded state")
        if wanted:
            newest = max(wanted)
            problems.append(
                f"database is behind the signed checkpoints (log has {expected_seq} entries,"
                f" a checkpoint has {newest}): an old vault.db was restored or entries removed"
            )
        return LogReport(expected_seq, frontier_root(frontier).hex(), not problems, problems)


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
