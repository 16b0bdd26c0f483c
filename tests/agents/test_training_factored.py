"""Factored (ghost-clipped) linear weights through the real runner: a graph that outputs
``act.w`` / ``sig.w`` instead of ``grad.w`` trains exactly like the dense one, and the vault's
checks (validator shapes, the probe, non-finite factors) cover the factors too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh

from agents import dpsgd
from agents.accounting import PrivacyLedger
from agents.linear_task import linear_mse_model
from agents.runner import TaskFailed, run_round, task_io
from agents.sandbox_worker import LocalGraph
from agents.training_step import DPStep
from agents.validator import check_task_io, validate_model
from tests.agents.test_runner import ADDRESS, DP, FAST, B, D, _data, _task, logistic_model
from vault.errors import ModelRefused


def _factored_task(batch: int = B) -> dict:
    task = _task(batch)
    task["params"] = [
        {"name": "w", "shape": [1, D], "dtype": "float32", "grad": "outer", "positions": 1},
        {"name": "b", "shape": [1], "dtype": "float32"},
    ]
    return task


def factored_logistic_model(batch: int = B, extra: str | None = None) -> bytes:
    """Logistic regression (BCE) with w [1, D] as factors: act.w = x, sig.w = dL/dz."""
    value, node = oh.make_tensor_value_info, oh.make_node
    inputs = [
        value("w", TensorProto.FLOAT, [1, D]),
        value("b", TensorProto.FLOAT, [1]),
        value("features", TensorProto.FLOAT, [batch, D]),
        value("labels", TensorProto.FLOAT, [batch]),
        value("mask", TensorProto.FLOAT, [batch]),
    ]
    inits = [oh.make_tensor("ax1", TensorProto.INT64, [1], [1])]
    nodes = [
        node("Gemm", ["features", "w", "b"], ["z2"], transB=1),
        node("Squeeze", ["z2", "ax1"], ["z"]),
        node("Softplus", ["z"], ["sp"]),
        node("Mul", ["labels", "z"], ["yz"]),
        node("Sub", ["sp", "yz"], ["l"]),
        node("Mul", ["l", "mask"], ["losses"]),
        node("Sigmoid", ["z"], ["p"]),
        node("Sub", ["p", "labels"], ["e"]),
        node("Mul", ["e", "mask"], ["dz"]),
        node("Unsqueeze", ["dz", "ax1"], ["dz2"]),
        node("Identity", ["dz2"], ["grad.b"]),
    ]
    act, sig = "features", "dz2"
    if extra == "mix_act":  # every example's activation carries the batch mean: examples leak
        nodes.append(node("ReduceMean", ["features"], ["fm"], axes=[0], keepdims=1))
        nodes.append(node("Add", ["features", "fm"], ["mixed"]))
        act = "mixed"
    elif extra == "mix_sig":
        # the batch's mean feature sum joins every signal (at zero parameters every dz is
        # +-0.5, so mixing the signals alone could go unseen by one swap)
        nodes.append(node("ReduceMean", ["features"], ["fm"], axes=[0], keepdims=1))
        nodes.append(node("ReduceSum", ["fm", "ax1"], ["fs"], keepdims=1))
        nodes.append(node("Add", ["dz2", "fs"], ["mixed"]))
        sig = "mixed"
    elif extra == "nan":
        inits.append(oh.make_tensor("neg", TensorProto.FLOAT, [], [-1.0]))
        nodes += [node("Log", ["neg"], ["nan"]), node("Add", ["features", "nan"], ["bad"])]
        act = "bad"
    nodes += [node("Identity", [act], ["act.w"]), node("Identity", [sig], ["sig.w"])]
    outputs = [
        value("losses", TensorProto.FLOAT, [batch]),
        value("act.w", TensorProto.FLOAT, [batch, D]),
        value("sig.w", TensorProto.FLOAT, [batch, 1]),
        value("grad.b", TensorProto.FLOAT, [batch, 1]),
    ]
    graph = oh.make_graph(nodes, "factored_logistic", inputs, outputs, initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _factored_round(model: bytes, **kwargs):
    features, labels = _data()
    ledger = PrivacyLedger(DP.epsilon_budget, DP.delta)
    params = {"w": np.zeros((1, D), np.float32), "b": np.zeros(1, np.float32)}
    kwargs.setdefault("limits", FAST)
    task = _factored_task()
    return run_round(task, model, params, ADDRESS, features, labels, DP, ledger, **kwargs)


def _one_step(model: bytes, task: dict, params: list[np.ndarray], clip: float) -> list:
    features, labels = _data()
    inputs, outputs = task_io(task)
    graph = LocalGraph(model, inputs, outputs)
    chosen = np.arange(3, 43)  # 40 rows: three graph calls of 16, the last one padded
    with DPStep(graph, task, features, labels, clip, 1e-9, 40.0, dpsgd.SGD(1.0)) as stepper:
        stepper.step(params, chosen, dpsgd.SecureRandom(), probe=True)
    return params


@pytest.mark.parametrize("clip", [0.05, 1.0, 100.0])
def test_factored_step_equals_the_dense_step(clip: float):
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal(D).astype(np.float32), np.array([0.3], np.float32)

    dense = _one_step(logistic_model(), _task(), [w.copy(), b.copy()], clip)
    factored = _one_step(
        factored_logistic_model(), _factored_task(), [w[None].copy(), b.copy()], clip
    )

    np.testing.assert_allclose(factored[0][0], dense[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(factored[1], dense[1], rtol=1e-5, atol=1e-6)


def test_factored_rounds_train_in_the_sandbox():
    features, labels = _data()
    outcome = _factored_round(factored_logistic_model())
    w, b = outcome.params["w"][0], outcome.params["b"][0]
    z = features @ w + b
    assert outcome.result.steps == DP.local_steps
    assert float(np.mean(np.logaddexp(0, z) - labels * z)) < np.log(2) - 0.1
    assert outcome.result.delta["w"].shape == (1, D)


@pytest.mark.parametrize(("extra", "output"), [("mix_act", "act.w"), ("mix_sig", "sig.w")])
def test_factors_mixing_examples_are_caught_by_the_probe(extra: str, output: str):
    with pytest.raises(TaskFailed, match=f"its {output} for one example changed"):
        _factored_round(factored_logistic_model(extra=extra))


def test_non_finite_factors_never_leave_the_runner():
    with pytest.raises(TaskFailed, match="NaN"):
        _factored_round(factored_logistic_model(extra="nan"))


def test_factor_outputs_are_checked_by_the_validator():
    model = onnx.load_model_from_string(factored_logistic_model())
    outputs = list(model.graph.output)
    outputs[1], outputs[2] = outputs[2], outputs[1]  # sig.w before act.w
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    with pytest.raises(ModelRefused, match="expected .*'act.w'.* but the model has .*'sig.w'"):
        _factored_round(model.SerializeToString())
    # the factored graph offered for a task that asks for dense gradients of w [1, D]
    task = {**_factored_task(), "params": [{**p, "grad": "dense"} for p in _task()["params"]]}
    task["params"][0] = {"name": "w", "shape": [1, D], "dtype": "float32"}
    with pytest.raises(ModelRefused, match="expected .*'grad.w'.* but the model has .*'act.w'"):
        check_task_io(validate_model(factored_logistic_model()), task)


@pytest.mark.parametrize("factored", [False, True])
def test_clipping_reads_private_copies_not_the_childs_memory(factored: bool):
    # a child taken over through a runtime bug could rewrite the shared outputs between the
    # norm pass and the sum pass and slip an unclipped gradient in: both passes must read
    # copies the child cannot reach
    task = _factored_task() if factored else _task()
    model = factored_logistic_model() if factored else logistic_model()
    features, labels = _data()
    inputs, outputs = task_io(task)
    graph = LocalGraph(model, inputs, outputs)
    with DPStep(graph, task, features, labels, 1.0, 1.0, 16.0, dpsgd.SGD(1.0)) as stepper:
        stepper._fill(np.arange(10))
        graph.run()
        copies = [
            part
            for grad in stepper.per_example(10)
            for part in ((grad.sig, grad.act) if isinstance(grad, dpsgd.Outer) else (grad,))
        ]
    assert len(copies) == (3 if factored else 2)
    for part in copies:
        assert not any(np.shares_memory(part, shared) for shared in graph.arrays.values())


@pytest.mark.parametrize("clip", [0.05, 100.0])
def test_factored_linear_task_steps_like_the_dense_one(clip: float):
    # agents.linear_task's factored form (the bundle smoke trains it): SGD's update of w runs
    # inside its gradient matmul, over three graph calls; the dense form has nothing to fuse
    from agents.package import read_package
    from app.gui.demo_exchange import task_package

    rng = np.random.default_rng(4)
    w, b = rng.standard_normal(D).astype(np.float32), np.array([0.3], np.float32)
    steps = {}
    for factored in (False, True):
        package = read_package(task_package("y", D, factored))
        task = {**package.task, "batch_size": B}
        model = linear_mse_model(D, B, factored)
        start = [w[None].copy() if factored else w.copy(), b.copy()]
        steps[factored] = _one_step(model, task, start, clip)
    np.testing.assert_allclose(steps[True][0][0], steps[False][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(steps[True][1], steps[False][1], rtol=1e-5, atol=1e-6)
