"""The runner on a CUDA GPU (``--device gpu``): run where onnxruntime-gpu sees a GPU, else skipped.

CI has no GPU; these run on a machine with one (the project's device checks). They hold the GPU
path to what the CPU tests hold the CPU path to: the graph computes the same numbers, a round
trains and signs, the sandbox reports the provider that ran, and a memory bomb is stopped by
the GPU arena cap with the parent alive.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest

from agents.runner import SandboxLimits, TaskFailed, task_io
from agents.sandbox import Sandbox
from tests.agents.test_runner import (
    DP,
    _bce,
    _data,
    _params,
    _round,
    _task,
    logistic_model,
    logistic_package_and_data,
)

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
    reason="needs onnxruntime-gpu and a CUDA GPU",
)

CUDA = ["CUDAExecutionProvider"]
CPU = ["CPUExecutionProvider"]


def _outputs(providers: list[str], features: np.ndarray, labels: np.ndarray) -> dict:
    inputs, outputs = task_io(_task())
    limits = SandboxLimits(memory_mib=1024, time_s=60, threads=1)
    with Sandbox(logistic_model(), inputs, outputs, limits, providers) as box:
        rng = np.random.default_rng(3)
        box.arrays["w"][:] = rng.standard_normal(box.arrays["w"].shape)
        box.arrays["b"][:] = 0.25
        box.arrays["features"][:] = features[: len(box.arrays["features"])]
        box.arrays["labels"][:] = labels[: len(box.arrays["labels"])]
        box.arrays["mask"][:] = 1.0
        box.run()
        ran = box.info["providers"]
        return {"providers": ran, **{o["name"]: box.arrays[o["name"]].copy() for o in outputs}}


def test_gpu_graph_computes_what_the_cpu_computes():
    features, labels = _data()
    gpu, cpu = _outputs(CUDA, features, labels), _outputs(CPU, features, labels)
    assert gpu.pop("providers")[0] == "CUDAExecutionProvider"
    assert cpu.pop("providers") == CPU
    for name, want in cpu.items():
        np.testing.assert_allclose(gpu[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_gpu_rounds_train_and_report_the_gpu():
    features, labels = _data()
    params = _params()
    before = _bce(params, features, labels)
    for index in range(3):
        outcome = _round(logistic_model(), params=params, round_index=index, device="gpu")
        params = outcome.params
    assert _bce(params, features, labels) < before - 0.2
    assert outcome.result.steps == DP.local_steps
    assert outcome.sandbox["providers"][0] == "CUDAExecutionProvider"
    assert "gpu_mem_limit" in outcome.sandbox["memory"]


def test_gpu_memory_bomb_is_stopped_by_the_arena_cap():
    limits = SandboxLimits(memory_mib=768, time_s=60, threads=1)
    with pytest.raises(TaskFailed, match="memory limit of 768 MiB"):
        _round(logistic_model(extra="memory"), limits=limits, device="gpu")
    assert _round(logistic_model(), limits=limits, device="gpu").result.steps == DP.local_steps


def test_auto_picks_the_gpu_when_there_is_one():
    outcome = _round(logistic_model(), device="auto")
    assert outcome.sandbox["providers"][0] == "CUDAExecutionProvider"


def test_cli_task_run_on_the_gpu(tessera, tmp_path):
    package, data = logistic_package_and_data(tmp_path)
    run = tessera("task", "run", str(package), "--data", str(data), "--device", "gpu", "--json")
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert report["rounds"][0]["steps"] > 0
    assert report["providers"][0] == "CUDAExecutionProvider"
    human = tessera("task", "run", str(package), "--data", str(data), "--device", "gpu")
    assert human.code == 0 and "trained on the GPU (CUDA)" in human.out
