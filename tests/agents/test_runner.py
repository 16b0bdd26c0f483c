"""The runner: DP-SGD rounds in a sandboxed child, limits, refusals, and the signed result.

Models are built here with onnx.helper (per-example gradients written out in the graph), so
these tests need neither torch nor the SDK. The bombs pass the validator: they are the kind of
model that only misbehaves when run.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto
from onnx import helper as oh

from agents.accounting import BudgetExceeded, PrivacyLedger
from agents.round_result import ResultInvalid, sign_result, verify_result
from agents.runner import DPConfig, SandboxLimits, TaskFailed, effective_dp, run_round, task_io
from agents.validator import validate_model
from identity.keys import did_for, generate_key
from vault.errors import ModelRefused

D = 5
B = 16
ADDRESS = "sha256:" + "ab" * 32


def _task(batch: int = B) -> dict:
    return {
        "format": "tessera-task/1",
        "name": "logistic-test",
        "params": [
            {"name": "w", "shape": [D], "dtype": "float32"},
            {"name": "b", "shape": [1], "dtype": "float32"},
        ],
        "batch_size": batch,
        "features": {"recipe": "test", "shape": [D], "dtype": "float32"},
        "label": {"field": "y", "dtype": "float32", "classes": None},
        "loss": "bce",
        "files": {"model.onnx": "0" * 64, "params.npz": "0" * 64},
        "opset": 17,
        "flops_per_example": 2 * D,
        "created_by": "did:key:test",
    }


def logistic_model(batch: int = B, extra: str | None = None) -> bytes:
    """Logistic regression with BCE; ``extra`` adds a hostile branch that feeds the outputs."""
    value = oh.make_tensor_value_info
    inputs = [
        value("w", TensorProto.FLOAT, [D]),
        value("b", TensorProto.FLOAT, [1]),
        value("features", TensorProto.FLOAT, [batch, D]),
        value("labels", TensorProto.FLOAT, [batch]),
        value("mask", TensorProto.FLOAT, [batch]),
    ]
    inits = [
        oh.make_tensor("ax1", TensorProto.INT64, [1], [1]),
        oh.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    node = oh.make_node
    nodes = [
        node("MatMul", ["features", "w"], ["xw"]),
        node("Add", ["xw", "b"], ["z"]),
        node("Softplus", ["z"], ["sp"]),
        node("Mul", ["labels", "z"], ["yz"]),
        node("Sub", ["sp", "yz"], ["l"]),
        node("Mul", ["l", "mask"], ["loss0"]),
        node("Sigmoid", ["z"], ["p"]),
        node("Sub", ["p", "labels"], ["e"]),
        node("Mul", ["e", "mask"], ["dz"]),
        node("Unsqueeze", ["dz", "ax1"], ["dz2"]),
        node("Mul", ["dz2", "features"], ["gw0"]),
        node("Identity", ["dz2"], ["grad.b"]),
    ]
    bad = "zero"  # a scalar the hostile branch replaces; 0 * anything finite is 0
    if extra == "memory":
        # each Expand is 256 MB (just under the validator's per-tensor limit), all alive at once
        inits.append(oh.make_tensor("big", TensorProto.INT64, [2], [8000, 8000]))
        parts = []
        for i in range(6):
            inits.append(oh.make_tensor(f"c{i}", TensorProto.FLOAT, [], [float(i)]))
            nodes.append(node("Add", ["b", f"c{i}"], [f"s{i}"]))
            nodes.append(node("Expand", [f"s{i}", "big"], [f"e{i}"]))
            parts.append(f"e{i}")
        nodes += [node("Sum", parts, ["all"]), node("ReduceSum", ["all"], ["red"], keepdims=0)]
        nodes.append(node("Mul", ["red", "zero"], ["hostile"]))
        bad = "hostile"
    elif extra == "time":
        # 40 chained 2048x2048 MatMuls: ~700 GFLOP, minutes on a laptop core
        inits.append(oh.make_tensor("sq", TensorProto.INT64, [2], [2048, 2048]))
        nodes.append(node("Expand", ["b", "sq"], ["m0"]))
        for i in range(40):
            nodes.append(node("MatMul", [f"m{i}", f"m{i}"], [f"m{i + 1}"]))
        nodes += [node("ReduceSum", ["m40"], ["red"], keepdims=0)]
        nodes.append(node("Mul", ["red", "zero"], ["hostile"]))
        bad = "hostile"
    elif extra == "nan":
        inits.append(oh.make_tensor("neg", TensorProto.FLOAT, [], [-1.0]))
        nodes.append(node("Log", ["neg"], ["hostile"]))  # log(-1) = NaN
        bad = "hostile"
    elif extra == "mix":
        # every example's gradient also carries the batch's mean feature: examples leak
        nodes.append(node("ReduceMean", ["features"], ["fm"], axes=[0], keepdims=1))
        nodes.append(node("Sub", ["gw0", "gw0"], ["z0"]))
        nodes.append(node("Add", ["z0", "fm"], ["hostile"]))
        bad = "hostile"
    nodes.append(node("Add", ["gw0", bad], ["grad.w"]))
    nodes.append(node("Add", ["loss0", "zero"], ["losses"]))
    outputs = [
        value("losses", TensorProto.FLOAT, [batch]),
        value("grad.w", TensorProto.FLOAT, [batch, D]),
        value("grad.b", TensorProto.FLOAT, [batch, 1]),
    ]
    graph = oh.make_graph(nodes, "logistic", inputs, outputs, initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, D)).astype(np.float32)
    labels = (features @ np.array([2.0, -1.0, 0.5, 1.5, -2.0]) > 0).astype(np.float32)
    return features, labels


def _params() -> dict[str, np.ndarray]:
    return {"w": np.zeros(D, np.float32), "b": np.zeros(1, np.float32)}


def _bce(params: dict[str, np.ndarray], features: np.ndarray, labels: np.ndarray) -> float:
    z = features @ params["w"] + params["b"][0]
    return float(np.mean(np.logaddexp(0, z) - labels * z))


DP = DPConfig(
    clip_norm=1.0,
    noise_multiplier=1.0,
    delta=1e-5,
    epsilon_budget=20.0,
    learning_rate=0.5,
    local_steps=8,
    expected_batch_size=24,
)
FAST = SandboxLimits(memory_mib=1024, time_s=30, threads=1)


def _round(model: bytes, ledger: PrivacyLedger | None = None, **kwargs):
    features, labels = _data()
    dp = kwargs.pop("dp", DP)
    ledger = ledger or PrivacyLedger(dp.epsilon_budget, dp.delta)
    params = kwargs.pop("params", _params())
    kwargs.setdefault("limits", FAST)
    task = kwargs.pop("task", _task())
    return run_round(task, model, params, ADDRESS, features, labels, dp, ledger, **kwargs)


def test_rounds_reduce_loss_and_account_privacy():
    features, labels = _data()
    ledger = PrivacyLedger(DP.epsilon_budget, DP.delta)
    params = _params()
    before = _bce(params, features, labels)
    spent = []
    for index in range(3):
        outcome = _round(logistic_model(), ledger, params=params, round_index=index)
        params = outcome.params
        spent.append(outcome.result.epsilon_total)
    assert _bce(params, features, labels) < before - 0.2
    assert spent == sorted(spent) and 0 < spent[-1] <= DP.epsilon_budget
    assert ledger.records == [(24 / 400, 1.0, 24)]
    result = outcome.result
    assert result.steps == 8 and result.round == 2 and result.package == ADDRESS
    assert 0 < result.examples_used <= result.samples
    assert outcome.sandbox["torch_loaded"] is False
    assert outcome.sandbox["network"] in ("network-namespace", "python-guard")


def test_batches_larger_than_the_graph_are_split_and_padded():
    # expected 40 per step with a graph of batch 16: three calls, the last padded and masked
    dp = dataclasses.replace(DP, expected_batch_size=40, local_steps=2)
    outcome = _round(logistic_model(), dp=dp)
    assert outcome.result.samples > 2 * B
    assert np.isfinite(outcome.mean_losses).all()


def test_result_is_signed_canonical_json_and_verifies():
    outcome = _round(logistic_model())
    jwk = generate_key()
    token = sign_result(outcome.result, jwk, {"w": [D], "b": [1]})
    did, again = verify_result(token, {"w": [D], "b": [1]}, expected_did=did_for(jwk))
    assert did == did_for(jwk)
    assert again.data_commitment == outcome.result.data_commitment
    np.testing.assert_array_equal(again.delta["w"], outcome.result.delta["w"])
    with pytest.raises(ResultInvalid):
        verify_result(token, {"w": [D + 1], "b": [1]})


def test_budget_is_checked_before_the_round_starts():
    ledger = PrivacyLedger(0.5, DP.delta)
    with pytest.raises(BudgetExceeded, match="not started"):
        _round(logistic_model(extra="time"), ledger, validate=False)
    assert ledger.records == []


def test_memory_bomb_is_killed_and_the_parent_runs_another_round():
    limits = SandboxLimits(memory_mib=768, time_s=60, threads=1)
    with pytest.raises(TaskFailed, match="exceeded memory limit of 768 MiB"):
        _round(logistic_model(extra="memory"), limits=limits)
    assert _round(logistic_model(), limits=limits).result.steps == DP.local_steps


def test_long_computation_is_killed_by_the_time_limit():
    limits = SandboxLimits(memory_mib=1024, time_s=3, threads=1)
    slow = logistic_model(extra="time")
    with pytest.raises(ModelRefused, match="declares 10 FLOPs per example"):
        _round(slow, limits=limits)  # hiding its cost in task.json is refused up front
    honest = {**_task(), "flops_per_example": validate_model(slow).flops_per_example}
    with pytest.raises(TaskFailed, match="exceeded time limit of 3 s"):
        _round(slow, limits=limits, task=honest)
    assert _round(logistic_model()).result.steps == DP.local_steps


def test_nan_gradients_never_leave_the_runner():
    with pytest.raises(TaskFailed, match="NaN"):
        _round(logistic_model(extra="nan"))


@pytest.mark.filterwarnings("ignore:overflow")
def test_overflowing_update_never_leaves_the_runner():
    # finite gradients, but the step overflows float32: the result check must catch it
    dp = dataclasses.replace(DP, learning_rate=3e38, clip_norm=1e30, local_steps=1)
    with pytest.raises(ResultInvalid, match="NaN or Inf"):
        _round(logistic_model(), dp=dp)


def test_wrong_output_shape_is_refused_or_fails():
    model = onnx.load_model_from_string(logistic_model())
    model.graph.output[1].type.tensor_type.shape.dim[1].dim_value = D + 1
    with pytest.raises(ModelRefused):
        _round(model.SerializeToString())
    with pytest.raises(TaskFailed, match="model"):
        _round(model.SerializeToString(), validate=False)


def test_graph_mixing_examples_is_caught_by_the_probe():
    with pytest.raises(TaskFailed, match="another example"):
        _round(logistic_model(extra="mix"))


def test_gpu_without_cuda_fails_clearly():
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TaskFailed, match="CUDAExecutionProvider"):
        _round(logistic_model(), device="gpu")
    assert _round(logistic_model(), device="auto").result.steps == DP.local_steps


CHILD_CHECKS = """
import json, socket, sys
from agents.sandbox_worker import _apply_limits, _isolate_network
network = _isolate_network()
_apply_limits(512 * 1024 * 1024)
seen = {"network": network}
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
    seen["connect"] = "connected"
except OSError as exc:
    seen["connect"] = type(exc).__name__
try:
    with open("written.txt", "w") as out:
        out.write("x" * 100)
    seen["write"] = "written"
except OSError as exc:
    seen["write"] = type(exc).__name__
try:
    seen["alloc"] = len(bytearray(1024 * 1024 * 1024))
except MemoryError:
    seen["alloc"] = "MemoryError"
print(json.dumps(seen))
"""


def test_child_sandbox_blocks_network_file_writes_and_memory(tmp_path):
    # the same setup calls the worker makes, checked from inside a child process
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"import sys; sys.path.insert(0, {root!r})\n" + CHILD_CHECKS
        done = subprocess.run(
            [sys.executable, "-I", "-c", code, str(port)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    seen = json.loads(done.stdout)
    assert seen["connect"] != "connected"
    assert seen["write"] != "written" and (tmp_path / "written.txt").stat().st_size == 0
    assert seen["alloc"] == "MemoryError"


def test_vault_settings_only_tighten():
    request = DPConfig(clip_norm=2.0, noise_multiplier=0.8, epsilon_budget=8.0, delta=1e-5)
    strict = effective_dp(request, {"clip_norm": 1.0, "noise_multiplier": 1.2, "epsilon_budget": 3})
    assert (strict.clip_norm, strict.noise_multiplier, strict.epsilon_budget) == (1.0, 1.2, 3.0)
    loose = effective_dp(request, {"clip_norm": 5.0, "noise_multiplier": 0.1, "epsilon_budget": 99})
    assert loose == request
    assert effective_dp(request, None) == request


def logistic_package_and_data(folder) -> tuple:
    """The logistic task as a package file and its training data as an .npz, in ``folder``."""
    from agents.package import write_package

    package = folder / "logistic.tpkg"
    write_package(package, _task(), logistic_model(), _params())
    features, labels = _data()
    data = folder / "data.npz"
    np.savez(data, features=features, labels=labels)
    return package, data


def test_cli_task_run_signs_results_and_refuses_clearly(tessera, tmp_path):
    # the command's face; kept here beside the runner it drives
    package, data = logistic_package_and_data(tmp_path)
    out = tmp_path / "results.json"
    common = [str(package), "--data", str(data), "--local-steps", "4", "--learning-rate", "0.5"]
    run = tessera("task", "run", *common, "--rounds", "2", "--out", str(out), "--json")
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert report["providers"] == ["CPUExecutionProvider"]
    assert report["fused_sgd_update"] is False  # no factored weight to fuse
    tokens = json.loads(out.read_text())["results"]
    did, result = verify_result(tokens[1], {"w": [D], "b": [1]}, report["signer"])
    assert result.round == 1 and result.epsilon_total == pytest.approx(report["epsilon_spent"])
    refused = {
        "dataset": tessera("task", "run", *common, "--dataset", "steps"),
        "budget": tessera("task", "run", *common, "--epsilon-budget", "0.01"),
        "gpu": tessera("task", "run", *common, "--device", "gpu"),
    }
    for name, result in refused.items():
        if name == "gpu" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            continue
        assert result.code == 1, name
        assert result.err.startswith("error: ") and "Traceback" not in result.err, name
    assert tessera("task", "run", str(package)).code == 2  # no --data: usage
    human = tessera("task", "run", *common)
    assert human.code == 0 and "trained on the CPU" in human.out


def test_the_tighter_of_ledger_and_request_budget_applies():
    ledger = PrivacyLedger(budget=100.0, delta=DP.delta)
    with pytest.raises(BudgetExceeded, match="budget of 0.5"):
        _round(logistic_model(), ledger, dp=dataclasses.replace(DP, epsilon_budget=0.5))


def test_numpys_blas_runs_on_one_thread_during_a_round(monkeypatch):
    # its idle threads would spin on the cores the noise helpers and the graph need
    from threadpoolctl import threadpool_info

    from agents.training_step import DPStep

    seen = []
    real_step = DPStep.step

    def step(self, *args, **kwargs):
        seen.append(
            {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
        )
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(DPStep, "step", step)
    _round(logistic_model())
    assert seen and all(threads == {1} for threads in seen)


def test_a_gpu_that_cannot_start_fails_when_chosen_and_falls_back_under_auto(monkeypatch):
    # onnxruntime-gpu lists CUDA even where no GPU is usable, and builds the session on the CPU
    import onnxruntime as ort

    from agents.sandbox import resolve_providers
    from agents.sandbox_worker import DeviceUnavailable, LocalGraph, _error_kind

    real = ort.InferenceSession

    def without_a_gpu(model, options, providers):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        assert "CUDAExecutionProvider" in names
        return real(model, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", without_a_gpu)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider"])
    inputs, outputs = task_io(_task())
    with pytest.raises(DeviceUnavailable, match="use --device cpu or auto") as refused:
        LocalGraph(logistic_model(), inputs, outputs, 1, resolve_providers("gpu"))
    assert _error_kind(refused.value) == "device"  # the parent reports it as it is
    auto = resolve_providers("auto")
    assert auto == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    graph = LocalGraph(logistic_model(), inputs, outputs, 1, auto)
    graph.arrays["features"][:] = 1.0
    graph.arrays["mask"][:] = 1.0
    graph.run()  # on the CPU, its outputs bound in place
    assert graph.arrays["losses"].sum() > 0
