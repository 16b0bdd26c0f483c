"""`checkpoints.jsonl`: the signed, hash-chained heads of the access logs, outside the database.

Each line is ``{"checkpoint": JWS}``; the JWS payload names the SHA-256 of the line before it
(``prev``, null on the first line), the newest size and root of the logs it covers, the time
and the vault's DID. Because every line fixes the one before it, the file is a hash chain, and
an old ``vault.db`` copied back (its logs shorter than, or different from, any head signed for
them) is detected.

The file is compacted when it grows past ``COMPACT_AFTER`` lines: it is atomically replaced by
one signed head line whose payload carries, besides ``prev: null``, ``logs``, ``time`` and
``vault``::

    "compacted": {"lines": <lines it replaces>, "last": <SHA-256 hex of the old last line>}

and ``logs`` holds every log's newest signed size and root, copied from the old file (never
from the database, so a rolled-back database cannot launder itself into the head), with the
``time`` it was first signed. Later lines chain to the head as to any line. A compacted head
is valid only as the first line.

Compaction drops the older heads, and with them the evidence against a database that was
rolled back and then grown past its newest head in one write (only the older heads can show
that its first entries changed). So the file is not compacted while it fails its own check,
or while the database disagrees with any head it signs (the ``check`` given by the access log).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity.keys import b64url_decode, jws_sign, jws_verify
from vault.errors import VerificationFailed
from vault.fsutil import append_line, atomic_write
from vault.timeparse import iso_utc

CHECKPOINTS = "checkpoints.jsonl"
# Past this many lines the file is rewritten as one compacted head (tests lower it).
COMPACT_AFTER = 10_000

Head = tuple[int, str]  # (tree size, root hex) of one log


@dataclass
class Chain:
    """What a full read of the checkpoint file found."""

    newest: dict[str, Head] = field(default_factory=dict)
    # every distinct head each log was ever signed at, with the time it was first signed
    signed: dict[str, dict[Head, str]] = field(default_factory=dict)
    lines: int = 0
    last: bytes | None = None
    problems: list[str] = field(default_factory=list)


class CheckpointFile:
    """Appends signed checkpoints to the file, reads and checks it, compacts it.

    Writers must hold the database's write lock (BEGIN IMMEDIATE) while they append or
    compact: that serializes every Tessera process that writes the file, so two of them never
    chain onto the same line and a compaction never drops a line appended meanwhile.
    """

    def __init__(
        self,
        folder: Path,
        jwk: str,
        did: str,
        check: Callable[[Chain], list[str]] | None = None,
    ) -> None:
        """``check(chain)`` names where the database disagrees with the signed heads."""
        self.path = folder / CHECKPOINTS
        self._jwk = jwk
        self._did = did
        self._check = check
        self._counted: tuple[int, int, int] | None = None  # (inode, bytes, lines)
        self._retry_compaction_at = 0

    # -- writing -------------------------------------------------------------------------

    def append(self, logs: dict[str, Head]) -> None:
        """Sign one checkpoint of ``logs`` (log id -> head), append it durably, maybe compact."""
        last = _last_line(self.path)
        lines = self._line_count()
        payload = {
            "prev": hashlib.sha256(last).hexdigest() if last else None,
            "logs": {log_id: {"size": s, "root": r} for log_id, (s, r) in sorted(logs.items())},
            "time": iso_utc(time.time()),
            "vault": self._did,
        }
        append_line(self.path, json.dumps({"checkpoint": jws_sign(self._jwk, payload)}))
        stat = self.path.stat()
        self._counted = (stat.st_ino, stat.st_size, lines + 1)
        if lines + 1 > COMPACT_AFTER and lines + 1 >= self._retry_compaction_at:
            try:
                compacted = self.compact()
            except OSError:
                # Compaction is housekeeping: the longer file is still whole and valid (the
                # rewrite replaces it atomically or not at all).
                compacted = False
            if not compacted:
                # Try again a little later: a refused file costs a full read and check.
                self._retry_compaction_at = lines + 1 + max(1, COMPACT_AFTER // 10)

    def compact(self) -> bool:
        """Replace the file by one signed head; False (file untouched) when it fails its check.

        A file with problems, or one that the database disagrees with at any signed head, is
        left as it is, so that `verify` keeps showing the evidence.
        """
        chain = self.read()
        if chain.problems or chain.last is None:
            return False
        if self._check is not None and self._check(chain):
            return False
        payload = {
            "compacted": {"lines": chain.lines, "last": hashlib.sha256(chain.last).hexdigest()},
            "prev": None,
            "logs": {
                log_id: {"size": size, "root": root, "time": chain.signed[log_id][(size, root)]}
                for log_id, (size, root) in sorted(chain.newest.items())
            },
            "time": iso_utc(time.time()),
            "vault": self._did,
        }
        line = json.dumps({"checkpoint": jws_sign(self._jwk, payload)}) + "\n"
        # temp file, fsync, rename, fsync folder: a crash leaves the old file or the new one
        atomic_write(self.path, line.encode("utf-8"))
        self._counted = None
        return True

    def _line_count(self) -> int:
        """Lines in the file; counted once, then kept while the file is only ours to grow."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return 0
        if self._counted and self._counted[:2] == (stat.st_ino, stat.st_size):
            return self._counted[2]
        lines = 0
        with open(self.path, "rb") as f:
            while block := f.read(1 << 20):
                lines += block.count(b"\n")
        self._counted = (stat.st_ino, stat.st_size, lines)
        return lines

    # -- reading -------------------------------------------------------------------------

    def read(self) -> Chain:
        """Every log's signed heads, after checking the chain and every signature.

        Problems found: an unreadable line, a broken hash chain (an edited, inserted or removed
        line), a bad signature, a compacted head anywhere but first, and a log whose signed
        head goes backwards (an old database restored and then written to).
        """
        chain = Chain()
        if not self.path.exists():
            return chain
        previous: bytes | None = None
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                line = raw.rstrip(b"\n")
                where = f"{CHECKPOINTS} line {number}"
                try:
                    self._check_line(line, number, previous, chain, where)
                except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                    chain.problems.append(f"{where}: unreadable checkpoint ({exc})")
                previous = line
                chain.lines = number
        chain.last = previous
        return chain

    def _check_line(
        self, line: bytes, number: int, previous: bytes | None, chain: Chain, where: str
    ) -> None:
        token = json.loads(line)["checkpoint"]
        payload: Any = json.loads(b64url_decode(token.split(".")[1]))
        try:
            jws_verify(token, self._did)
        except VerificationFailed as exc:
            chain.problems.append(f"{where}: bad checkpoint signature ({exc})")
        expected = hashlib.sha256(previous).hexdigest() if previous is not None else None
        if payload["prev"] != expected:
            chain.problems.append(f"{where}: hash chain broken")
        if "compacted" in payload:
            compacted = payload["compacted"]
            if number != 1:
                chain.problems.append(f"{where}: a compacted head is valid only as the first line")
            elif int(compacted["lines"]) < 1 or len(bytes.fromhex(compacted["last"])) != 32:
                chain.problems.append(f"{where}: malformed compacted head")
        for log_id, head in payload["logs"].items():
            size, root = int(head["size"]), str(head["root"])
            # a compacted head keeps when each log's head was first signed (older ones did not)
            signed_at = str(head.get("time", payload["time"]))
            chain.signed.setdefault(log_id, {}).setdefault((size, root), signed_at)
            before = chain.newest.get(log_id)
            if before and (size < before[0] or (size == before[0] and root != before[1])):
                chain.problems.append(
                    f"{where}: a log's signed head contradicts an earlier one (size"
                    f" {before[0]}, then {size}): an old vault.db restored and written to?"
                )
            chain.newest[log_id] = (size, root)


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
