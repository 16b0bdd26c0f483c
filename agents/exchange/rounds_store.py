"""The training rounds of requests: updates, their chunks, aggregation claims and status.

An accepted update is stored as raw float32 coordinate chunks (:data:`CHUNK` values per row)
and earns its reward receipt in the same transaction. Aggregation claims the open round,
streams the same chunk of every update, publishes the next round's parameters and drops the
chunks.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from agents.exchange import rewards
from agents.exchange.database import CHUNK, Database, Tx
from agents.exchange.errors import Refused
from vault.errors import TesseraError

AGGREGATION_TIMEOUT = 600  # a claim on a round older than this belongs to a dead worker


def read_request(tx: Tx, request_id: str, lock: bool = False) -> dict[str, Any]:
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


class Rounds:
    """Updates and aggregation of every request's rounds, on the exchange's database."""

    def __init__(self, db: Database, org_key: Callable[[Tx, str], str | None]) -> None:
        self.db = db
        # the issuing organization's signing key, for the update's reward receipt
        self._org_key = org_key

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
            request = read_request(tx, request_id, lock=True)
            first = tx.one(
                "SELECT round, receipt FROM updates WHERE request_id = ? AND vault = ?"
                " AND jws_hash = ? AND accepted = 1",
                (request_id, vault, update["jws_hash"]),
            )
            if first is not None:  # a retry of an update already taken: same answer, once
                return {"accepted": True, "receipt": first[1], "round": first[0]}
            _check_round_open(request, update["round"], now)
            problem = consent_problem(tx, request_id, vault, update["consent"], now)
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
            receipt = rewards.issue_receipt(tx, self._org_key, request, vault, update["round"])
            tx.execute("UPDATE updates SET receipt = ? WHERE id = ?", (receipt, update_id))
        return {"accepted": True, "receipt": receipt, "round": update["round"]}

    def begin_aggregation(self, request_id: str, now: float) -> dict[str, Any] | None:
        """Claim the open round for aggregation if it is due; None if there is nothing to do.

        While claimed, updates for the round are answered 503 (retry later) so none slips in
        unaggregated; a claim older than :data:`AGGREGATION_TIMEOUT` (a crashed worker) is
        taken over.
        """
        with self.db.transaction() as tx:
            request = read_request(tx, request_id, lock=True)
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
            request = read_request(tx, request_id, lock=True)
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


def consent_problem(
    tx: Tx, request_id: str, subject: str, consent_id: str, now: float
) -> str | None:
    """Why ``consent_id`` does not let ``subject`` send updates for the request, or None."""
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
