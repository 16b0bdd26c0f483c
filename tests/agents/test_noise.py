"""The DP noise: drawn by a helper process (or in process), with the right spread, fresh every
step, out of the sandbox child's reach, wiped at the end; and the noise in a real round's
update is N(0, (sigma * C * lr / E)^2) per coordinate."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as oh

from agents import noise as noise_module
from agents.accounting import PrivacyLedger
from agents.noise import HELPER_MIN_VALUES, MAX_HELPERS, NoiseAhead, cores_available, helper_count
from agents.runner import DPConfig, SandboxLimits, run_round, task_io
from agents.sandbox import Sandbox, resolve_providers
from tests.agents.test_runner import _task as logistic_task
from tests.agents.test_runner import logistic_model


def _draw(noise: NoiseAhead, size: int) -> np.ndarray:
    means = [np.zeros(size, np.float32)]
    noise.add_to(means)
    return means[0]


@pytest.mark.parametrize(
    ("helpers", "mode"), [(0, "in process"), (1, "helper process"), (3, "3 helper processes")]
)
def test_noise_std_is_the_std_asked_for_within_5_percent(helpers: int, mode: str):
    sigma, clip = 1.3, 0.7
    with NoiseAhead(200_000, sigma * clip, helpers=helpers) as noise:
        draws = _draw(noise, 200_000)
        assert noise.mode == mode
    # 200k draws: the sample std's own error is ~0.2%, far inside the 5% asked for
    assert abs(draws.std() / (sigma * clip) - 1) < 0.05
    assert abs(draws.mean()) < 0.01 * sigma * clip


def test_every_step_gets_fresh_noise_added_in_place():
    with NoiseAhead(50_007, 1.0) as noise:
        means = [np.full((7, 7001), 5.0, np.float32), np.full(1000, 5.0, np.float32)]
        noise.add_to(means)
        first = np.concatenate([m.reshape(-1) for m in means]) - 5.0
        second = _draw(noise, 50_007)
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.03
    assert abs(first.std() - 1) < 0.03 and abs(second.std() - 1) < 0.03


def test_small_draws_made_steps_ahead_are_fresh_every_step():
    # in process, a 1,000-value model's noise is drawn 16 steps at a time: each step its own
    with NoiseAhead(1000, 2.0, helpers=0) as noise:
        draws = np.stack([_draw(noise, 1000) for _ in range(40)])
    assert abs(draws.std() / 2.0 - 1) < 0.03
    correlations = np.corrcoef(draws)[np.triu_indices(40, 1)]
    assert np.abs(correlations).max() < 0.2  # 1,000 values: chance correlations ~0.03


def test_small_draws_are_made_in_process():
    # a helper per round would cost more than the draws of a few thousand values
    with NoiseAhead(HELPER_MIN_VALUES - 1, 1.0) as small:
        assert small.mode == "in process"
    with NoiseAhead(HELPER_MIN_VALUES, 1.0) as big:
        assert big.mode == ("helper process" if cores_available() > 1 else "in process")


def test_means_that_do_not_fit_are_refused():
    with NoiseAhead(10, 1.0, helpers=0) as noise:
        with pytest.raises(ValueError, match="noise for 10 values"):
            noise.add_to([np.zeros(9, np.float32)])
        readonly = np.zeros(10, np.float32)
        readonly.flags.writeable = False
        with pytest.raises(ValueError, match="writable"):
            noise.add_to([readonly])
        with pytest.raises(ValueError, match="float32"):
            noise.add_to([np.zeros(10, np.float64)])


def test_a_helper_that_dies_is_replaced_by_drawing_in_process():
    with NoiseAhead(100_000, 2.0, helpers=3) as noise:
        assert noise.mode == "3 helper processes"
        helper = noise._helpers[1].process
        os.kill(helper.pid, signal.SIGKILL)
        helper.wait()
        draws = _draw(noise, 100_000)
        assert noise.mode == "in process"
        assert abs(draws.std() / 2.0 - 1) < 0.05


def test_helpers_draw_independent_slices():
    # each helper has its own key: equal keys would repeat one slice's noise in the next
    with NoiseAhead(2 * HELPER_MIN_VALUES, 1.0, helpers=2) as noise:
        draws = _draw(noise, 2 * HELPER_MIN_VALUES)
    first, second = draws[:HELPER_MIN_VALUES], draws[HELPER_MIN_VALUES:]
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.03
    assert abs(first.std() - 1) < 0.03 and abs(second.std() - 1) < 0.03


def test_one_helper_per_spare_core_for_big_draws(monkeypatch):
    monkeypatch.setattr(noise_module, "cores_available", lambda: 16)
    assert helper_count(269_322) == MAX_HELPERS
    assert helper_count(3 * HELPER_MIN_VALUES) == 3  # each draws at least HELPER_MIN_VALUES
    assert helper_count(269_322, graph_threads=14) == 2  # the graph's threads keep theirs
    assert helper_count(HELPER_MIN_VALUES - 1) == 0
    monkeypatch.setattr(noise_module, "cores_available", lambda: 1)
    assert helper_count(269_322) == 0


def test_close_stops_the_helper_and_wipes_the_noise():
    noise = NoiseAhead(1000, 1.0, helpers=2)
    helpers = [h.process for h in noise._helpers]
    assert len(helpers) == 2
    _draw(noise, 1000)
    noise.close()
    assert all(helper.poll() is not None for helper in helpers)
    assert not noise._local.any()
    with pytest.raises(RuntimeError, match="closed"):
        noise.add_to([np.zeros(1000, np.float32)])


@pytest.mark.parametrize("helpers", [0, 2])
def test_helpers_subtract_the_noise_from_held_parameters(helpers: int):
    size = 4 * HELPER_MIN_VALUES + 3
    with NoiseAhead(size, 0.5, helpers=helpers, into_params=True) as noise:
        held = noise.hold_params([np.full((3, HELPER_MIN_VALUES), 2.0, np.float32),
                                  np.full(HELPER_MIN_VALUES + 3, 2.0, np.float32)])  # fmt: skip
        steps = []
        for _ in range(2):
            before = np.concatenate([p.reshape(-1) for p in held])
            noise.start()  # as a step's graph starts
            noise.subtract_from(held)
            steps.append(before - np.concatenate([p.reshape(-1) for p in held]))
        assert noise.mode == ("in process" if helpers == 0 else "2 helper processes")
        with pytest.raises(RuntimeError, match="parameters"):
            noise.add_to([np.zeros(size, np.float32)])
    for step in steps:
        assert abs(step.std() / 0.5 - 1) < 0.05 and abs(step.mean()) < 0.01
    assert abs(np.corrcoef(steps[0], steps[1])[0, 1]) < 0.03


def test_a_failed_helper_slice_gets_fresh_noise_never_none():
    size = 2 * HELPER_MIN_VALUES
    with NoiseAhead(size, 1.0, helpers=2, into_params=True) as noise:
        held = noise.hold_params([np.zeros(size, np.float32)])
        helper = noise._helpers[1].process
        os.kill(helper.pid, signal.SIGKILL)
        helper.wait()
        noise.start()
        noise.subtract_from(held)
        assert noise.mode == "in process"
        values = held[0].copy()
    # the dead helper's slice was drawn here instead: every value carries noise, some maybe
    # twice (the live helper may have subtracted its draw before the failure was seen)
    assert values[:HELPER_MIN_VALUES].std() > 0.97
    assert values[HELPER_MIN_VALUES:].std() > 0.97


def test_parameters_are_held_before_the_first_draw():
    with NoiseAhead(HELPER_MIN_VALUES, 1.0, helpers=1, into_params=True) as noise:
        noise.start()
        with pytest.raises(RuntimeError, match="before the first draw"):
            noise.hold_params([np.zeros(HELPER_MIN_VALUES, np.float32)])


def test_the_sandbox_child_holds_no_descriptor_of_the_noise():
    task = logistic_task()
    inputs, outputs = task_io(task)
    limits = SandboxLimits(memory_mib=1024, time_s=30, threads=1)
    with NoiseAhead(1000, 1.0, helpers=1) as noise:
        providers = resolve_providers("cpu")
        with Sandbox(logistic_model(), inputs, outputs, limits, providers) as box:
            assert box._process is not None
            fds = Path(f"/proc/{box._process.pid}/fd")
            links = [os.readlink(fd) for fd in fds.iterdir()]
        helper = noise._helpers[0].process
        helper_links = [os.readlink(fd) for fd in Path(f"/proc/{helper.pid}/fd").iterdir()]
    assert any("tessera-round" in link for link in links)  # its own region, as expected
    assert not any("tessera-noise" in link for link in links)
    assert any("tessera-noise" in link for link in helper_links)
    assert not any("tessera-round" in link for link in helper_links)


# --------------------------------------------------------------- the noise in a real round

D = HELPER_MIN_VALUES  # big enough for the helper
B = 8


def _copy_task() -> dict:
    """A task whose per-example gradient of w is the example's features, exactly."""
    return {
        "format": "tessera-task/1",
        "name": "noise-test",
        "params": [{"name": "w", "shape": [D], "dtype": "float32"}],
        "batch_size": B,
        "features": {"recipe": "test", "shape": [D], "dtype": "float32"},
        "label": {"field": "y", "dtype": "float32", "classes": None},
        "loss": "mse",
    }


def _copy_model() -> bytes:
    value = oh.make_tensor_value_info
    inputs = [
        value("w", TensorProto.FLOAT, [D]),
        value("features", TensorProto.FLOAT, [B, D]),
        value("labels", TensorProto.FLOAT, [B]),
        value("mask", TensorProto.FLOAT, [B]),
    ]
    outputs = [value("losses", TensorProto.FLOAT, [B]), value("grad.w", TensorProto.FLOAT, [B, D])]
    zero = oh.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [
        oh.make_node("Mul", ["mask", "zero"], ["losses"]),
        oh.make_node("Identity", ["features"], ["grad.w"]),
    ]
    graph = oh.make_graph(nodes, "copy", inputs, outputs, initializer=[zero])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _copy_round(direction: np.ndarray, dp: DPConfig):
    features = np.tile(3.0 * direction, (64, 1))  # every example's gradient has norm 3 > C
    return run_round(
        _copy_task(),
        _copy_model(),
        {"w": np.zeros(D, np.float32)},
        "sha256:" + "cd" * 32,
        features,
        np.zeros(64, np.float32),
        dp,
        PrivacyLedger(dp.epsilon_budget, dp.delta),
        limits=SandboxLimits(memory_mib=1024, time_s=60, threads=1),
        validate=False,
        probe=False,
    )


def _dp(optimizer: str, lr: float) -> DPConfig:
    return DPConfig(
        clip_norm=1.0,
        noise_multiplier=20.0,
        delta=1e-5,
        epsilon_budget=5.0,
        learning_rate=lr,
        optimizer=optimizer,
        local_steps=1,
        expected_batch_size=4,
    )


def test_a_rounds_update_carries_noise_of_std_sigma_c_lr_over_e():
    clip, sigma, lr, expected = 1.0, 20.0, 0.5, 4.0
    direction = np.random.default_rng(0).standard_normal(D).astype(np.float32)
    direction /= np.linalg.norm(direction)
    outcome = _copy_round(direction, _dp("sgd", lr))
    assert outcome.sandbox["noise"] == "helper process"
    # each of the n sampled examples, clipped to C (less the norm margin of 1e-4), then * lr/E
    clipped = outcome.result.samples * clip / 1.0001 * direction * lr / expected
    noise = -outcome.result.delta["w"] - clipped
    assert abs(noise.std() / (sigma * clip * lr / expected) - 1) < 0.05
    assert abs(noise.mean()) < 0.05 * sigma * clip * lr / expected


def test_adams_gradient_carries_the_noise():
    # every example pushes every coordinate the same way; Adam's first step is about
    # -lr * sign(gradient), so without noise in its gradient every coordinate would fall
    direction = np.full(D, 1.0 / np.sqrt(D), np.float32)
    outcome = _copy_round(direction, _dp("adam", 0.01))
    delta = outcome.result.delta["w"]
    # |g| / (|g| + eps): the odd coordinate whose noisy gradient lands near 0 steps less
    assert np.mean(np.isclose(np.abs(delta), 0.01, rtol=1e-3)) > 0.999
    assert np.abs(delta).max() <= 0.01 * (1 + 1e-5)
    assert 0.45 < np.mean(delta > 0) < 0.55  # noise std 5 per coordinate, the mean ~0.003
