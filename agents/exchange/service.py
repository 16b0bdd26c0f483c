"""What the exchange's routes share: the store, the clock, the request cache, due aggregation.

Aggregation is a background task (FastAPI ``BackgroundTasks``, run after the answer is sent)
scheduled by every update and every round/status/model fetch; it starts only when the round is
due (enough updates, or the deadline passed) and a claim in the database makes sure only one
runs, even across processes.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi.responses import Response

from agents.exchange import format_time
from agents.exchange.errors import Refused
from agents.exchange.signed_calls import Caller
from agents.exchange.store import Store
from agents.exchange.strategies import RoundInputs, strategy_for

log = logging.getLogger("tessera.exchange")

NPZ = "application/octet-stream"


def params_npz(spec: list[dict[str, Any]], flat: np.ndarray) -> bytes:
    """Flat float32 parameters as .npz bytes, one array per task.json parameter."""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for entry in spec:
        size = math.prod(entry["shape"])
        arrays[entry["name"]] = flat[offset : offset + size].reshape(entry["shape"])
        offset += size
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class ExchangeService:
    """The store and clock behind the routes, with the immutable parts of requests cached."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.aggregations: list[dict[str, Any]] = []  # this process's timings, for benchmarks
        self._specs: dict[str, dict[str, Any]] = {}  # requests never change once posted

    def request_info(self, request_id: str) -> dict[str, Any]:
        """The immutable parts of a request (round state is always read fresh)."""
        if request_id not in self._specs:
            with self.store.db.transaction(write=False) as tx:
                row = self.store.request(tx, request_id)
            info = {k: row[k] for k in ("id", "issuer", "jws", "payload", "package", "spec")}
            info["size"] = sum(math.prod(e["shape"]) for e in row["spec"])
            self._specs[request_id] = info
        return self._specs[request_id]

    def issuer_only(self, caller: Caller, request_id: str) -> dict[str, Any]:
        """The request's info; 403 unless the caller issued it."""
        info = self.request_info(request_id)
        if caller.did != info["issuer"]:
            raise Refused("only the issuing organization may see this", 403)
        return info

    def round_view(self, info: dict[str, Any]) -> dict[str, Any]:
        """The open round, the number of rounds, the round's deadline and whether it closed."""
        now = self.clock()
        with self.store.db.transaction(write=False) as tx:
            row = self.store.request(tx, info["id"])
        terms = info["payload"]["aggregation"]
        closed = row["closed"] or row["expires"] <= now
        deadline = None if closed else format_time(row["round_opened"] + terms["round_seconds"])
        return {
            "round": row["round"],
            "rounds": info["payload"]["rounds"],
            "deadline": deadline,
            "closed": bool(closed),
        }

    def current_params(self, info: dict[str, Any]) -> Response:
        """The open round's global parameters as an .npz answer."""
        round_index = self.round_view(info)["round"]
        flat = np.frombuffer(self.store.params(info["id"], round_index), dtype="<f4")
        return Response(params_npz(info["spec"], flat), media_type=NPZ)

    def advance(self, request_id: str) -> None:
        """Aggregate the open round if it is due (enough updates, or the deadline passed).

        Runs as a background task after the answer is sent, so no caller waits for it. A
        failure is logged, not raised: every update is already stored, the claim on the round
        is released, and the next update or round fetch tries again.
        """
        try:
            self.aggregate_due_round(request_id)
        except Exception:
            log.exception("aggregation of %s failed; it is retried on the next call", request_id)

    def aggregate_due_round(self, request_id: str) -> None:
        """Claim, aggregate and publish the open round if it is due; release it on failure."""
        store, clock = self.store, self.clock
        work = store.rounds.begin_aggregation(request_id, clock())
        if work is None:
            return
        started = time.perf_counter()
        try:
            info = self.request_info(request_id)
            strategy = strategy_for(info["payload"])
            inputs = RoundInputs(examples=work["examples"], norms=work["norms"])
            chunks = store.rounds.round_chunks(request_id, work["round"], work["ids"], info["size"])
            delta = strategy.aggregate(chunks, inputs, info["size"])
            params = np.frombuffer(store.params(request_id, work["round"]), dtype="<f4") + delta
            seconds = time.perf_counter() - started
            store.rounds.finish_aggregation(
                request_id, work["round"], params.tobytes(), clock(), seconds
            )
        except BaseException:
            store.rounds.abort_aggregation(request_id)
            raise
        started = time.perf_counter()
        store.rounds.drop_chunks(request_id, work["round"], info["size"])
        cleanup = time.perf_counter() - started
        self.aggregations.append(
            {
                "request": request_id,
                "round": work["round"],
                "updates": len(work["ids"]),
                "seconds": seconds,
                "cleanup_seconds": cleanup,
            }
        )
        log.info(
            "request %s round %d: %d updates aggregated in %.2f s (cleanup %.2f s)",
            request_id,
            work["round"],
            len(work["ids"]),
            seconds,
            cleanup,
        )
