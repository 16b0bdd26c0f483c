"""DP-SGD arithmetic: the noise has the right spread, clipping never lets a gradient through
above C, the clipped sum equals the reference, and the optimizers step the right way."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import dpsgd


def _grads(n: int = 64, seed: int = 0, scale: float = 3.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # per-example scales spread over three orders of magnitude: some clipped, some not
    sizes = rng.uniform(0.01, scale, size=n).astype(np.float32)
    shapes = [(40, 30), (30,), (9000,), (1,)]
    grads = [rng.standard_normal((n, *s)).astype(np.float32) for s in shapes]
    norms = np.sqrt(sum((g.reshape(n, -1).astype(np.float64) ** 2).sum(1) for g in grads))
    factors = (sizes / norms).astype(np.float32)
    return [g * factors.reshape((n,) + (1,) * (g.ndim - 1)) for g in grads]


def _joint_norms(grads: list[np.ndarray]) -> np.ndarray:
    n = grads[0].shape[0]
    return np.sqrt(sum((g.reshape(n, -1).astype(np.float64) ** 2).sum(1) for g in grads))


def test_secure_normal_looks_gaussian():
    z = dpsgd.SecureRandom().normal(400_001).astype(np.float64)
    assert z.shape == (400_001,) and z.dtype == np.float64
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs((z**4).mean() - 3) < 0.1  # kurtosis of a Gaussian
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.005


def test_each_generator_has_its_own_key():
    a, b = dpsgd.SecureRandom().random_bytes(64), dpsgd.SecureRandom().random_bytes(64)
    assert not np.array_equal(a, b)


def test_uniform_and_bernoulli():
    rng = dpsgd.SecureRandom()
    u = rng.uniform(200_000)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    assert abs(rng.bernoulli(200_000, 0.03).mean() - 0.03) < 0.003


@pytest.mark.parametrize("clip", [0.05, 0.5, 1.0, 2.5])
def test_clipped_norms_never_exceed_c(clip):
    for seed in range(5):
        clipped = dpsgd.clip_per_example(_grads(seed=seed), clip)
        assert _joint_norms(clipped).max() <= clip + 1e-6


def test_small_gradients_are_left_alone():
    grads = _grads(scale=0.5)
    clipped = dpsgd.clip_per_example(grads, 10.0)
    for g, c in zip(grads, clipped, strict=True):
        np.testing.assert_allclose(c, g, rtol=2e-4)


def test_clipped_sum_matches_reference_and_ignores_padding():
    grads = _grads(n=64)
    n = 50
    for g in grads:
        g[n:] = np.nan  # padding rows: whatever the model put there is never read
    sums, norms = dpsgd.clipped_sum(grads, n, 1.0)
    reference = dpsgd.clip_per_example([g[:n] for g in grads], 1.0)
    for s, r in zip(sums, reference, strict=True):
        np.testing.assert_allclose(s, r.sum(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norms, _joint_norms([g[:n] for g in grads]), rtol=1e-5)


def test_non_finite_gradients_raise():
    grads = _grads(n=8)
    grads[2][3, 0] = np.inf
    with pytest.raises(dpsgd.NonFiniteGradient):
        dpsgd.clipped_sum(grads, 8, 1.0)
    grads = _grads(n=8)
    grads[0][1, 0, 0] = 3e30  # finite, but its square overflows float32
    with pytest.raises(dpsgd.NonFiniteGradient):
        dpsgd.clipped_sum(grads, 8, 1.0)


def test_empty_sample_gives_pure_noise():
    sums, norms = dpsgd.clipped_sum([np.zeros((4, 3), np.float32)], 0, 1.0)
    assert sums[0].shape == (3,) and not sums[0].any() and norms.size == 0


def test_clip_weights_carry_the_scale_of_the_mean():
    grads = _grads()
    sq = dpsgd.per_example_sq_norms(grads, 64)
    plain = dpsgd.clip_factors(sq, 1.0)
    scaled = dpsgd.clip_factors(sq, 1.0, 0.05 / 40.0)  # lr / E, as a step folds them in
    np.testing.assert_allclose(scaled, plain * (0.05 / 40.0), rtol=1e-6)
    mean = dpsgd.weighted_sum(grads[0], 64, scaled)
    np.testing.assert_allclose(
        mean, dpsgd.weighted_sum(grads[0], 64, plain) * (0.05 / 40.0), rtol=1e-5, atol=1e-9
    )


def test_sgd_and_adam_descend_a_quadratic():
    for optimizer in (dpsgd.SGD(0.1), dpsgd.Adam(0.1)):
        params = [np.array([3.0, -2.0], np.float32)]
        for _ in range(200):
            # gradient of |p|^2, times the scale the optimizer wants (SGD: lr; Adam: 1)
            optimizer.step(params, [optimizer.gradient_scale * 2 * params[0]])
        assert np.abs(params[0]).max() < 0.05


def test_adam_first_step_is_learning_rate_sized():
    params = [np.zeros(3, np.float32)]
    dpsgd.Adam(0.01).step(params, [np.array([5.0, -0.1, 1e-3], np.float32)])
    np.testing.assert_allclose(params[0], [-0.01, 0.01, -0.01], rtol=1e-3)
    with pytest.raises(ValueError):
        dpsgd.make_optimizer("rmsprop", 0.1)


def test_norms_just_above_c_are_still_clipped():
    # float32 rounding in the norm must never let a gradient at C * (1 + tiny) through
    grads = _grads(n=64, seed=7)
    norms = _joint_norms(grads)
    target = 1.0 + np.linspace(-1e-6, 1e-6, 64)
    for g in grads:
        g *= (target / norms).astype(np.float32).reshape((64,) + (1,) * (g.ndim - 1))
    assert _joint_norms(dpsgd.clip_per_example(grads, 1.0)).max() <= 1.0 + 1e-6


def test_normal_matches_a_float64_box_muller_on_the_same_keystream(monkeypatch):
    # same key twice: the float32 square root and angle must stay within float32 rounding of
    # the textbook transform computed in float64 from the same bits
    monkeypatch.setattr(dpsgd.os, "urandom", lambda n: bytes(range(n)))
    n, std = 100_001, 2.5
    got = dpsgd.SecureRandom().normal(n, std).astype(np.float64)
    pairs = (n + 1) // 2
    raw = dpsgd.SecureRandom().random_bytes(12 * pairs)
    radius_bits = raw[: 8 * pairs].view("<u8")
    angle_bits = raw[8 * pairs :].view("<u4")
    u = 1.0 - (radius_bits >> np.uint64(12)).astype(np.float64) * 2.0**-52  # (0, 1]
    theta = (angle_bits >> np.uint32(8)).astype(np.float64) * (2 * np.pi / 2**24)
    radius = std * np.sqrt(-2 * np.log(u))
    want = np.concatenate([radius * np.cos(theta), radius * np.sin(theta)])[:n]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * radius.max())


def test_returned_draws_are_never_reused_by_a_later_call():
    rng = dpsgd.SecureRandom()
    first = rng.normal(50_001)
    kept = first.copy()
    second = rng.normal(50_001)
    other = dpsgd.SecureRandom().normal(80_000)
    stream = rng.random_bytes(1000)
    kept_stream = stream.copy()
    rng.random_bytes(1000)

    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(stream, kept_stream)
    for a, b in ((first, second), (first, other), (second, other)):
        assert not np.shares_memory(a, b)
    assert not np.array_equal(first, second)


# ------------------------------------------------------------- factored (ghost) clipping


def _factored(n: int = 64, positions: int = 1, p: int = 12, q: int = 20, seed: int = 0):
    """An Outer weight gradient plus a dense bias, per-example scales over 3 decades."""
    rng = np.random.default_rng(seed)
    steps = (positions,) if positions > 1 else ()
    scale = np.exp(rng.uniform(np.log(0.01), np.log(10.0), n)).astype(np.float32)
    sig = rng.standard_normal((n, *steps, p)).astype(np.float32)
    sig *= scale.reshape((n,) + (1,) * (sig.ndim - 1))
    act = rng.standard_normal((n, *steps, q)).astype(np.float32)
    bias = (rng.standard_normal((n, p)) * scale[:, None]).astype(np.float32)
    return [dpsgd.Outer(sig=sig, act=act), bias]


def _materialized(grads: list) -> list[np.ndarray]:
    return [g.materialize(len(g.sig)) if isinstance(g, dpsgd.Outer) else g for g in grads]


@pytest.mark.parametrize("positions", [1, 3, 40])
@pytest.mark.parametrize("clip", [0.05, 1.0, 4.0])
def test_factored_clipped_norms_never_exceed_c(positions: int, clip: float):
    for seed in range(3):
        grads = _factored(positions=positions, seed=seed)
        # reconstructed from the factors in float64, then clipped by the vault's factors
        dense = [g.astype(np.float64) for g in _materialized(grads)]
        factors = dpsgd.clip_factors(dpsgd.per_example_sq_norms(grads, 64), clip)
        clipped = [g * factors.reshape((64,) + (1,) * (g.ndim - 1)) for g in dense]
        assert _joint_norms(clipped).max() <= clip


@pytest.mark.parametrize("positions", [1, 3, 40])
def test_factored_norms_equal_the_materialized_norms(positions: int):
    grads = _factored(positions=positions)

    got = np.sqrt(dpsgd.per_example_sq_norms(grads, 64))

    want = _joint_norms([g.astype(np.float64) for g in _materialized(grads)])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(got >= want * (1 - 1e-6))  # T > 1 adds a rounding bound: never under


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 16),
    positions=st.integers(1, 4),
    p=st.integers(1, 9),
    q=st.integers(1, 9),
    clip=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_factored_clipped_sum_equals_the_materialized_clip(n, positions, p, q, clip, seed):
    grads = _factored(n=16, positions=positions, p=p, q=q, seed=seed)

    sums, norms = dpsgd.clipped_sum(grads, n, clip)

    dense = [g[:n] for g in _materialized(grads)]
    want_sums, want_norms = dpsgd.clipped_sum(dense, n, clip)
    for got, want in zip(sums, want_sums, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * clip)
    np.testing.assert_allclose(norms, want_norms, rtol=1e-5)


@pytest.mark.parametrize("positions", [1, 3])
def test_sgd_fused_into_the_weight_gradient_matmul_equals_the_separate_update(positions: int):
    weight = _factored(positions=positions)[0]
    factors = dpsgd.clip_factors(dpsgd.per_example_sq_norms([weight], 64), 1.0, 0.05)
    param = np.random.default_rng(5).standard_normal((12, 20)).astype(np.float32)
    want = param - dpsgd.weighted_sum(weight, 40, factors[:40])

    dpsgd.subtract_weighted_sum(weight, 40, factors[:40], param)  # in place; 24 rows of padding

    np.testing.assert_allclose(param, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        dpsgd.subtract_weighted_sum(weight, 40, factors[:40], np.zeros((20, 12), np.float32))


def test_the_fused_update_finds_numpys_blas_on_linux():
    # numpy's Linux wheels carry OpenBLAS; without it SGD quietly loses its fused update
    if sys.platform.startswith("linux"):
        assert dpsgd.fused_update_available()


@pytest.mark.parametrize("positions", [1, 3])
def test_factored_padding_rows_are_never_read(positions: int):
    grads = _factored(positions=positions)
    n = 41
    clean, _ = dpsgd.clipped_sum(grads, n, 1.0)
    for g in grads:
        for array in (g.sig, g.act) if isinstance(g, dpsgd.Outer) else (g,):
            array[n:] = np.nan

    dirty, _ = dpsgd.clipped_sum(grads, n, 1.0)

    for a, b in zip(clean, dirty, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("where", ["sig", "act"])
@pytest.mark.parametrize("value", [np.nan, np.inf, 3e30])
def test_non_finite_factors_raise(where: str, value: float):
    grads = _factored(n=8)
    getattr(grads[0], where)[5, 2] = value

    with pytest.raises(dpsgd.NonFiniteGradient):
        dpsgd.clipped_sum(grads, 8, 1.0)


def test_factored_empty_sample_gives_zero_sums_in_the_weight_shape():
    sums, norms = dpsgd.clipped_sum(_factored(n=4, p=3, q=5), 0, 1.0)
    assert [s.shape for s in sums] == [(3, 5), (3,)] and norms.size == 0


def test_normal_into_a_callers_buffer():
    buffer = np.full(10_001, np.nan, dtype=np.float32)

    got = dpsgd.SecureRandom().normal(10_001, 2.0, out=buffer)

    assert got is buffer and np.all(np.isfinite(buffer)) and 1.8 < buffer.std() < 2.2
    with pytest.raises(ValueError, match="float32"):
        dpsgd.SecureRandom().normal(3, out=np.zeros(4, np.float32))
    assert dpsgd.SecureRandom().normal(0).shape == (0,)
    assert dpsgd.SecureRandom().normal(1).shape == (1,)


@pytest.mark.parametrize("positions", [3, 40])
def test_factored_norms_in_small_chunks_are_the_same(positions: int, monkeypatch):
    grads = _factored(positions=positions)
    whole = dpsgd.per_example_sq_norms(grads, 64)
    monkeypatch.setattr(dpsgd, "_FLOAT64_VALUES", 1)  # one example per chunk

    np.testing.assert_array_equal(dpsgd.per_example_sq_norms(grads, 64), whole)
