"""Aggregation math as pure numpy functions over a matrix of updates (one row per update).

- FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
  Decentralized Data" (AISTATS) — the mean of the updates weighted by examples. Each update is
  first scaled down to at most ``max_norm`` (norm bounding, Sun et al. 2019, "Can You Really
  Backdoor Federated Learning?"), so no single update can move the model arbitrarily far.
- Coordinate-wise trimmed mean and median: Yin et al. 2018, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates" (ICML). Unweighted, since a Byzantine vault
  could lie about its example count.

Every function takes the rows of one *coordinate chunk* as well as a whole model: the exchange
streams chunks from storage so memory stays bounded by ``updates x chunk``, and for FedAvg
the per-update norms come from the whole update (``norms=``), not from the chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Columns handled per block in the coordinate-wise order statistics: a (block, n) float32
# slab stays in cache while it is partitioned, which is several times faster than
# partitioning a (n, many) matrix along axis 0.
_BLOCK = 256


def row_norms(deltas: np.ndarray) -> np.ndarray:
    """L2 norm of each row, accumulated in float64."""
    rows = np.asarray(deltas, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", rows, rows))


def bound_factors(norms: np.ndarray, max_norm: float | None) -> np.ndarray:
    """Per-update scale factors min(1, max_norm / norm) that bound each update's norm."""
    norms = np.asarray(norms, dtype=np.float64)
    if max_norm is None:
        return np.ones_like(norms)
    with np.errstate(divide="ignore"):
        return np.minimum(1.0, np.where(norms > 0, max_norm / norms, 1.0))


def fedavg_weights(
    examples: np.ndarray, norms: np.ndarray, max_norm: float | None, max_examples: float | None
) -> np.ndarray:
    """Coefficients c_i so that FedAvg is sum_i c_i * delta_i (weights x norm bounds)."""
    weights = np.asarray(examples, dtype=np.float64)
    if max_examples is not None:
        # a vault's claim about its example count is not verifiable; bound its influence
        weights = np.minimum(weights, max_examples)
    if weights.size == 0 or np.any(weights <= 0):
        raise ValueError("fedavg needs at least one update and positive example counts")
    return weights / weights.sum() * bound_factors(norms, max_norm)


def fedavg(
    deltas: np.ndarray,
    examples: np.ndarray,
    max_norm: float | None = None,
    norms: np.ndarray | None = None,
    max_examples: float | None = None,
) -> np.ndarray:
    """Example-weighted mean of norm-bounded updates (float32, one value per column)."""
    rows = np.asarray(deltas, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError("fedavg needs a non-empty (updates, coordinates) matrix")
    norms = row_norms(rows) if norms is None else np.asarray(norms)
    coeffs = fedavg_weights(examples, norms, max_norm, max_examples)
    # one BLAS gemv; float32 is exact enough for a weighted mean of bounded updates
    return coeffs.astype(np.float32) @ rows


def trim_count(n: int, fraction: float) -> int:
    """How many values to drop at EACH end: floor(fraction * n), keeping at least one value."""
    if not 0.0 <= fraction < 0.5:
        raise ValueError("trim fraction must be in [0, 0.5)")
    return min(int(np.floor(fraction * n)), (n - 1) // 2)


def _columnwise(deltas: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    rows = np.asarray(deltas, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError("needs a non-empty (updates, coordinates) matrix")
    out = np.empty(rows.shape[1], dtype=np.float32)
    for start in range(0, rows.shape[1], _BLOCK):
        # (block, n) contiguous: each coordinate's n values are adjacent for partition
        slab = np.ascontiguousarray(rows[:, start : start + _BLOCK].T)
        out[start : start + slab.shape[0]] = reduce(slab)
    return out


def trimmed_mean(deltas: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``trim_count`` largest and smallest values."""
    n = np.asarray(deltas).shape[0]
    k = trim_count(n, fraction)

    def reduce(slab: np.ndarray) -> np.ndarray:
        if k == 0:
            return slab.mean(axis=1, dtype=np.float64)
        # two single-pivot selections beat one two-pivot partition by about 1.5x
        slab.partition(k, axis=1)  # the k smallest now sit left of k
        kept = slab[:, k:]
        kept.partition(n - 2 * k - 1, axis=1)  # and the k largest right of the kept middle
        return kept[:, : n - 2 * k].mean(axis=1, dtype=np.float64)

    return _columnwise(deltas, reduce)


def median(deltas: np.ndarray) -> np.ndarray:
    """Coordinate-wise median (mean of the two middle values for an even count)."""
    n = np.asarray(deltas).shape[0]
    half = n // 2

    def reduce(slab: np.ndarray) -> np.ndarray:
        slab.partition(half, axis=1)
        if n % 2:
            return slab[:, half]
        # everything left of the pivot is <= it, so the lower middle value is their max:
        # one selection instead of two
        lower = slab[:, :half].max(axis=1)
        return (slab[:, half].astype(np.float64) + lower) / 2

    return _columnwise(deltas, reduce)
