"""Aggregation strategies: one small class per algorithm, chosen by name from a registry.

Shaped like Flower's ``flwr/server/strategy``: :class:`FedAvg` (McMahan et al. 2017) is the
base; :class:`FedTrimmedMean` and :class:`FedMedian` (Yin et al. 2018) override the one method
that differs. The math lives in :mod:`agents.exchange.aggregate`; a strategy only feeds it
coordinate chunks streamed from storage and stitches the results, a few chunks at a time on a
small thread pool (numpy releases the GIL in BLAS and in partition), so memory stays bounded by
``workers x updates x chunk`` however large the model is.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agents.exchange import aggregate


@dataclass(frozen=True)
class RoundInputs:
    """What a strategy knows about the accepted updates of a round, in row order."""

    examples: np.ndarray
    norms: np.ndarray


class FedAvg:
    """Example-weighted mean with per-update norm bounding (McMahan et al. 2017)."""

    name: ClassVar[str] = "fedavg"

    def __init__(self, aggregation: dict[str, Any], max_examples: float | None = None) -> None:
        self.max_norm = float(aggregation["max_update_norm"])
        self.max_examples = max_examples
        self.trim_fraction = float(aggregation.get("trim_fraction", 0.1))

    def aggregate_chunk(self, chunk: np.ndarray, inputs: RoundInputs) -> np.ndarray:
        """Aggregate the rows of one coordinate chunk into one value per coordinate."""
        return aggregate.fedavg(
            chunk, inputs.examples, self.max_norm, inputs.norms, self.max_examples
        )

    def aggregate(
        self,
        chunks: Iterable[tuple[int, np.ndarray]],
        inputs: RoundInputs,
        size: int,
        workers: int | None = None,
    ) -> np.ndarray:
        """The aggregated delta of length ``size`` from ``(offset, rows)`` coordinate chunks."""
        workers = workers or min(4, os.cpu_count() or 1)
        out = np.zeros(size, dtype=np.float32)
        covered = 0
        pending: deque[tuple[int, Future[np.ndarray]]] = deque()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for offset, rows in chunks:
                if rows.shape[0] != inputs.examples.shape[0]:
                    raise ValueError("a chunk does not have one row per accepted update")
                pending.append((offset, pool.submit(self.aggregate_chunk, rows, inputs)))
                # bounded read-ahead: at most workers + 1 chunks in memory at once
                while len(pending) > workers:
                    covered += _place(out, *pending.popleft())
            while pending:
                covered += _place(out, *pending.popleft())
        if covered != size:
            raise ValueError(f"chunks covered {covered} of {size} coordinates")
        return out


def _place(out: np.ndarray, offset: int, future: Future[np.ndarray]) -> int:
    values = future.result()
    out[offset : offset + values.shape[0]] = values
    return values.shape[0]


class FedTrimmedMean(FedAvg):
    """Coordinate-wise trimmed mean (Yin et al. 2018); unweighted."""

    name: ClassVar[str] = "trimmed_mean"

    def aggregate_chunk(self, chunk: np.ndarray, inputs: RoundInputs) -> np.ndarray:
        """Trimmed mean of each coordinate, dropping ``trim_fraction`` at each end."""
        return aggregate.trimmed_mean(chunk, self.trim_fraction)


class FedMedian(FedAvg):
    """Coordinate-wise median (Yin et al. 2018); unweighted."""

    name: ClassVar[str] = "median"

    def aggregate_chunk(self, chunk: np.ndarray, inputs: RoundInputs) -> np.ndarray:
        """Median of each coordinate."""
        return aggregate.median(chunk)


STRATEGIES: dict[str, type[FedAvg]] = {cls.name: cls for cls in (FedAvg, FedTrimmedMean, FedMedian)}


def strategy_for(request: dict[str, Any]) -> FedAvg:
    """The strategy a training request names, configured from its terms."""
    aggregation = request["aggregation"]
    try:
        cls = STRATEGIES[aggregation["strategy"]]
    except KeyError:
        raise ValueError(f"unknown aggregation strategy {aggregation.get('strategy')!r}") from None
    return cls(aggregation, max_examples=request["local_steps"] * request["batch_size"])
