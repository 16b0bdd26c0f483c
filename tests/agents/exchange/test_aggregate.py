"""Aggregation math (pure functions) and the chunk-streaming strategies."""

from __future__ import annotations

import numpy as np
import pytest

from agents.exchange import aggregate
from agents.exchange.strategies import (
    STRATEGIES,
    FedAvg,
    FedMedian,
    FedTrimmedMean,
    RoundInputs,
    strategy_for,
)

TERMS = {"strategy": "fedavg", "max_update_norm": 1e9, "min_updates": 1, "round_seconds": 60}


def test_fedavg_weighs_by_examples():
    deltas = np.array([[1.0, 1.0], [3.0, 3.0]], dtype=np.float32)

    result = aggregate.fedavg(deltas, np.array([1, 3]))

    np.testing.assert_allclose(result, [2.5, 2.5])


def test_fedavg_bounds_each_update_norm():
    # the second update has norm 10; bounded to norm 1 it is [0.6, 0.8]
    deltas = np.array([[0.0, 0.5], [6.0, 8.0]], dtype=np.float32)

    result = aggregate.fedavg(deltas, np.array([1, 1]), max_norm=1.0)

    np.testing.assert_allclose(result, [(0.0 + 0.6) / 2, (0.5 + 0.8) / 2], rtol=1e-6)


def test_fedavg_caps_claimed_examples():
    deltas = np.array([[0.0], [1.0]], dtype=np.float32)

    result = aggregate.fedavg(deltas, np.array([10, 1_000_000]), max_examples=10)

    np.testing.assert_allclose(result, [0.5])


def test_fedavg_on_chunks_uses_whole_update_norms():
    rng = np.random.default_rng(1)
    deltas = rng.standard_normal((5, 100)).astype(np.float32)
    examples = np.array([1, 2, 3, 4, 5])
    norms = aggregate.row_norms(deltas)

    whole = aggregate.fedavg(deltas, examples, max_norm=5.0)
    chunked = np.concatenate(
        [aggregate.fedavg(deltas[:, s : s + 30], examples, 5.0, norms) for s in range(0, 100, 30)]
    )

    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


def test_fedavg_refuses_empty_or_zero_weights():
    with pytest.raises(ValueError):
        aggregate.fedavg(np.zeros((0, 3), dtype=np.float32), np.array([]))
    with pytest.raises(ValueError):
        aggregate.fedavg(np.zeros((2, 3), dtype=np.float32), np.array([0, 1]))


def test_bound_factors():
    factors = aggregate.bound_factors(np.array([0.0, 0.5, 2.0, 8.0]), 2.0)

    np.testing.assert_allclose(factors, [1.0, 1.0, 1.0, 0.25])


@pytest.mark.parametrize(
    ("n", "fraction", "k"), [(10, 0.1, 1), (9, 0.1, 0), (5, 0.4, 2), (2, 0.4, 0)]
)
def test_trim_count(n, fraction, k):
    assert aggregate.trim_count(n, fraction) == k


def test_trimmed_mean_drops_the_extremes():
    column = np.array([1, 2, 3, 4, 1000, -1000, 5, 6, 7, 8], dtype=np.float32)[:, None]

    result = aggregate.trimmed_mean(column, fraction=0.1)

    # one value dropped at each end: -1000 and 1000
    np.testing.assert_allclose(result, [4.5])


def test_trimmed_mean_matches_a_sorting_reference():
    rng = np.random.default_rng(2)
    deltas = rng.standard_normal((21, 700)).astype(np.float32)  # several column blocks

    result = aggregate.trimmed_mean(deltas, fraction=0.2)

    k = 4
    reference = np.sort(deltas, axis=0)[k : 21 - k].mean(axis=0)
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-6)


def test_trimmed_mean_with_no_trim_is_the_mean():
    deltas = np.arange(12, dtype=np.float32).reshape(3, 4)

    np.testing.assert_allclose(aggregate.trimmed_mean(deltas, 0.0), deltas.mean(axis=0))


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_median_matches_numpy(n):
    rng = np.random.default_rng(n)
    deltas = rng.standard_normal((n, 600)).astype(np.float32)

    np.testing.assert_allclose(aggregate.median(deltas), np.median(deltas, axis=0), rtol=1e-6)


def test_median_ignores_a_minority_of_huge_values():
    deltas = np.array([[1.0], [2.0], [3.0], [1e30], [-1e30]], dtype=np.float32)

    assert aggregate.median(deltas)[0] == 2.0


def test_median_does_not_modify_its_input():
    deltas = np.array([[3.0, 1.0], [1.0, 2.0], [2.0, 3.0]], dtype=np.float32)
    before = deltas.copy()

    aggregate.median(deltas)
    aggregate.trimmed_mean(deltas, 0.34)

    np.testing.assert_array_equal(deltas, before)


@pytest.mark.parametrize("cls", [FedAvg, FedTrimmedMean, FedMedian])
def test_streamed_strategy_equals_the_whole_matrix(cls):
    rng = np.random.default_rng(3)
    deltas = rng.standard_normal((9, 1000)).astype(np.float32)
    inputs = RoundInputs(
        examples=np.arange(1, 10, dtype=np.float64), norms=aggregate.row_norms(deltas)
    )
    strategy = cls({**TERMS, "max_update_norm": 20.0, "trim_fraction": 0.2})
    chunks = ((s, deltas[:, s : s + 128]) for s in range(0, 1000, 128))

    streamed = strategy.aggregate(chunks, inputs, 1000, workers=2)

    np.testing.assert_allclose(streamed, strategy.aggregate_chunk(deltas, inputs), rtol=1e-6)


def test_strategy_refuses_chunks_that_do_not_cover_the_model():
    strategy = FedAvg(TERMS)
    inputs = RoundInputs(examples=np.ones(2), norms=np.ones(2))
    chunks = [(0, np.zeros((2, 10), dtype=np.float32))]

    with pytest.raises(ValueError, match="covered 10 of 20"):
        strategy.aggregate(iter(chunks), inputs, 20)


def test_registry_and_strategy_for():
    assert set(STRATEGIES) == {"fedavg", "trimmed_mean", "median"}
    request = {"aggregation": {**TERMS, "strategy": "median"}, "local_steps": 5, "batch_size": 8}

    strategy = strategy_for(request)

    assert isinstance(strategy, FedMedian)
    assert strategy.max_examples == 40
    with pytest.raises(ValueError, match="unknown"):
        strategy_for({**request, "aggregation": {**TERMS, "strategy": "krum"}})
