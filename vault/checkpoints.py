"""`checkpoints.jsonl`: the signed, hash-chained heads of the access logs, outside the database.

Each line is ``{"checkpoint": JWS}``; the JWS payload names the SHA-256 of the line before it
(``prev``, null on the first line), the newest size and root of the logs it covers, the time
and the vault's DID. Because every line fixes the one before it, the file is a hash chain, and
an old ``vault.db`` copied back (its logs shorter than, or different from, their newest signed
heads) is detected.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity.keys import b64url_decode, jws_sign, jws_verify
from vault.errors import VerificationFailed
from vault.fsutil import append_line
from vault.timeparse import iso_utc

CHECKPOINTS = "checkpoints.jsonl"

Head = tuple[int, str]  # (tree size, root hex) of one log


@dataclass
class Chain:
    """What a full read of the checkpoint file found."""

    newest: dict[str, Head] = field(default_factory=dict)
    lines: int = 0
    last: bytes | None = None
    problems: list[str] = field(default_factory=list)


class CheckpointFile:
    """Appends signed checkpoints to the file, reads and checks it.

    Writers must hold the database's write lock (BEGIN IMMEDIATE) while they append: that
    serializes every Tessera process that writes the file, so two never chain onto one line.
    """

    def __init__(self, folder: Path, jwk: str, did: str) -> None:
        self.path = folder / CHECKPOINTS
        self._jwk = jwk
        self._did = did

    # -- writing -------------------------------------------------------------------------

    def append(self, logs: dict[str, Head]) -> None:
        """Sign one checkpoint of ``logs`` (log id -> head) and append it durably."""
        last = _last_line(self.path)
        payload = {
            "prev": hashlib.sha256(last).hexdigest() if last else None,
            "logs": {log_id: {"size": s, "root": r} for log_id, (s, r) in sorted(logs.items())},
            "time": iso_utc(time.time()),
            "vault": self._did,
        }
        append_line(self.path, json.dumps({"checkpoint": jws_sign(self._jwk, payload)}))

    # -- reading -------------------------------------------------------------------------

    def read(self) -> Chain:
        """Every log's newest signed head, after checking the chain and every signature.

        Problems found: an unreadable line, a broken hash chain (an edited, inserted or removed
        line), a bad signature, and a log whose signed head goes backwards (an old database
        restored and then written to).
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
        for log_id, head in payload["logs"].items():
            size, root = int(head["size"]), str(head["root"])
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
